"""``python -m medrepro.config [--params P] [--merge OVERRIDE]``: check the params and print them merged, as YAML."""

from __future__ import annotations

import argparse
import sys

import yaml

from medrepro.config.loader import load_params
from medrepro.errors import ParamsError


def main(argv: list[str] | None = None) -> None:
    """``python -m medrepro.config [--merge OVERRIDE]``: check and print the merged params as YAML."""
    parser = argparse.ArgumentParser(prog="python -m medrepro.config")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--merge", default=None, help="override file, e.g. config/paper.yaml")
    args = parser.parse_args(argv)
    try:
        merged, _ = load_params(args.params, args.merge)
    except ParamsError as exc:
        sys.exit(f"error: {exc}")
    sys.stdout.write(yaml.safe_dump(merged, sort_keys=False))


if __name__ == "__main__":
    main()
