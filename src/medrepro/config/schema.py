"""Params files as YAML: reading, merging an override, validating against workflow/schemas/params.schema.yaml."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from medrepro.errors import ParamsError


def schema_path() -> Path:
    """workflow/schemas/params.schema.yaml of the project (found from the working directory or the package)."""
    for root in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = root / "workflow" / "schemas" / "params.schema.yaml"
        if candidate.is_file():
            return candidate
    raise ParamsError("workflow/schemas/params.schema.yaml not found (run from the project root)")


@cache
def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml's C loader when PyYAML has it (10× faster on params.yaml and the schema)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _schema() -> dict[str, Any]:
    return safe_load_yaml(schema_path().read_text())


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
        data = safe_load_yaml(path.read_text())
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
    if err.validator == "required":
        raise ParamsError(f"{source}: {key!r}: {err.message}")
    raise ParamsError(f"{source}: invalid value for {key!r}: {err.message}")
