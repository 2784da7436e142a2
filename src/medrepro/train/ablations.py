"""EI Tables 4 and 6 settings: ``<knob>-<value>`` strings (``ei.ablations``) that change one EI knob of params.

Torch-free, so the report stage can parse settings without importing the training code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrepro.errors import DataError

ABLATION_KNOBS: dict[str, type] = {"int_layer": int, "insert_layer": int, "lambda_aa": float, "lambda_ag": float}


def parse_ablation(setting: str) -> tuple[str, int | float]:
    """``"int_layer-2"`` → ``("int_layer", 2)``: one EI knob of Table 4 (layers) or Table 6 (λ1, λ2) and its value."""
    knob, sep, value = setting.rpartition("-")
    if not sep or knob not in ABLATION_KNOBS:
        raise DataError(f"ablation setting {setting!r}: expected <knob>-<value> with knob in {sorted(ABLATION_KNOBS)}")
    try:
        return knob, ABLATION_KNOBS[knob](value)
    except ValueError as exc:
        raise DataError(f"ablation setting {setting!r}: bad value {value!r} for {knob}") from exc


def with_ablation(params: Mapping[str, Any], setting: str | None) -> dict[str, Any]:
    """``params`` with one ``ei`` knob replaced (Tables 4 and 6 vary one knob at a time, the rest at default)."""
    if not setting:
        return dict(params)
    knob, value = parse_ablation(setting)
    return {**params, "ei": {**params["ei"], knob: value}}
