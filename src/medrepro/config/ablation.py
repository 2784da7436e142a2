"""EI ablation settings (``ei.ablations`` entries such as ``int_layer-2``): the knobs they change and their parsing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medrepro.errors import ParamsError


def _bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError(value)
    return value == "true"


#: EI Tables 4 and 6 (and the ``intervention`` mutation): the knob an ``ei.ablations`` entry changes, its value type
ABLATION_KNOBS: dict[str, Callable[[str], Any]] = {"int_layer": int, "insert_layer": int, "lambda_aa": float,
                                                   "lambda_ag": float, "intervention": _bool}


def parse_ablation(setting: str) -> tuple[str, int | float | bool]:
    """``"int_layer-2"`` → ``("int_layer", 2)``: one EI knob of Table 4 (layers) or Table 6 (λ1, λ2) and its value;
    ``"intervention-false"`` → ``("intervention", False)`` (EI without [INT])."""
    knob, sep, value = setting.rpartition("-")
    if not sep or knob not in ABLATION_KNOBS:
        raise ParamsError(f"ablation setting {setting!r}: expected <knob>-<value> with knob in "
                          f"{sorted(ABLATION_KNOBS)}")
    try:
        return knob, ABLATION_KNOBS[knob](value)
    except ValueError as exc:
        raise ParamsError(f"ablation setting {setting!r}: bad value {value!r} for {knob}") from exc
