"""Saved runs read back: a model rebuilt from the description JSON beside its weights (diffusers' from_config
habit). Each kind of run has its own loader beside its builder (``train.downstream.load_classifier``,
``ei.peft.load_unimodal``, ``ei.multimodal.load_multimodal``, ``hica.runs.load_hica``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from medrepro.errors import WeightsError
from medrepro.io import read_json


def description(weights: Path) -> dict[str, Any]:
    """The JSON saved beside ``weights`` by the training runner."""
    path = Path(weights).with_suffix(".json")
    if not path.is_file():
        raise WeightsError(f"run description not found: {path} (written beside {Path(weights).name} by training)")
    return read_json(path)


def read_weights(path: Path, hint: str = "") -> dict[str, torch.Tensor]:
    """A safetensors state; a missing file is an error naming it (and ``hint``: which stage makes it)."""
    if not Path(path).is_file():
        raise WeightsError(f"weights not found: {path}" + (f" ({hint})" if hint else ""))
    return load_file(str(path))


def load_saved(weights: Path, builder: str, build: Callable[[Mapping[str, Any]], nn.Module], strict: bool = True,
               load: Callable[[nn.Module, Mapping[str, Any], dict[str, torch.Tensor]], None] | None = None
               ) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a saved run of kind ``builder`` and its description: ``build(description)``, then the
    saved state loaded into it (``strict=False``: only trainable tensors were saved, the frozen base comes from
    the file the description names; ``load(model, description, state)``: a kind's own way to put its state in).
    A run of another kind is an error naming its description."""
    desc = description(weights)
    if desc.get("builder") != builder:
        raise WeightsError(f"{Path(weights).with_suffix('.json')}: a {desc.get('builder')!r} run, not {builder!r}")
    model = build(desc)
    state = read_weights(weights)
    if load is not None:
        load(model, desc, state)
        return model.eval(), desc
    result = model.load_state_dict(state, strict=strict)
    if result.unexpected_keys:
        raise WeightsError(f"{weights} does not fit the model its description builds: "
                           f"unexpected keys {result.unexpected_keys[:5]}")
    return model.eval(), desc
