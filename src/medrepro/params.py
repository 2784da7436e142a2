"""Loading and validating params.yaml, the single source of every knob (DESIGN.md, Principles)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from medrepro.errors import ParamsError

#: environment variable naming an override YAML merged on top of params.yaml (set by the Snakefile for
#: ``--configfile config/paper.yaml`` runs, so that stage commands see the same values as the rules).
OVERRIDE_ENV = "MEDREPRO_PARAMS_OVERRIDE"


def schema_path() -> Path:
    """workflow/schemas/params.schema.yaml of the project (found from the working directory or the package)."""
    for root in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = root / "workflow" / "schemas" / "params.schema.yaml"
        if candidate.is_file():
            return candidate
    raise ParamsError("workflow/schemas/params.schema.yaml not found (run from the project root)")


@cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(schema_path().read_text())


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ParamsError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def validate(params: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Validate against the JSON schema; the error names the offending key path (e.g. ``train.lr_max``)."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return
    err = errors[0]
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        name = ".".join([*map(str, err.absolute_path), extra[0]]) if extra else key
        raise ParamsError(f"{source}: unknown key {name!r}")
    raise ParamsError(f"{source}: invalid value for {key!r}: {err.message}")


def load_params(path: str | os.PathLike = "params.yaml", override: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read params.yaml, merge an override file (argument or $MEDREPRO_PARAMS_OVERRIDE), validate, return."""
    params = read_yaml(Path(path))
    override = override or os.environ.get(OVERRIDE_ENV)
    source = str(path)
    if override:
        params = deep_merge(params, read_yaml(Path(override)))
        source = f"{path} + {override}"
    validate(params, source)
    check_references(params, source)
    return params


def check_references(params: Mapping[str, Any], source: str) -> None:
    """Cross-key checks the schema cannot express: every listed dataset/method has its block."""
    for ds in params["datasets"]:
        if ds not in params["data"]:
            raise ParamsError(f"{source}: datasets lists {ds!r} but data.{ds} is missing")
    for m in params["downstream"]["methods"]:
        if m not in params["downstream"]["models"]:
            raise ParamsError(f"{source}: downstream.methods lists {m!r} but downstream.models.{m} is missing")
    ei = params["ei"]
    for ds in ei["datasets"]:
        if ds not in params["datasets"]:
            raise ParamsError(f"{source}: ei.datasets lists {ds!r} but datasets does not")
    for b in ei["table3_methods"]:
        if b not in ei["baselines"]:
            raise ParamsError(f"{source}: ei.table3_methods lists {b!r} but ei.baselines.{b} is missing")


def main(argv: list[str] | None = None) -> None:
    """``python -m medrepro.params [--merge OVERRIDE]``: print the validated (merged) params as YAML."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m medrepro.params")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--merge", default=None, help="override file, e.g. config/paper.yaml")
    args = parser.parse_args(argv)
    try:
        merged = load_params(args.params, args.merge)
    except ParamsError as exc:
        sys.exit(f"error: {exc}")
    sys.stdout.write(yaml.safe_dump(merged, sort_keys=False))


if __name__ == "__main__":
    main()
