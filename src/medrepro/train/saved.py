"""Saved runs read back: a model rebuilt from the description JSON beside its weights (diffusers' from_config
habit), and the pre-adapted unimodal states and selection scores that EI's towers and gating prior start from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from medrepro.errors import WeightsError
from medrepro.io import read_json
from medrepro.layout import RunPaths


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


def _builders() -> dict[str, Callable[[Mapping[str, Any]], nn.Module]]:
    from medrepro.train.downstream import rebuild_classifier
    from medrepro.train.hica import rebuild_hica
    from medrepro.train.multimodal import rebuild_multimodal
    from medrepro.train.peft import rebuild_unimodal

    return {"classifier": rebuild_classifier, "multimodal": rebuild_multimodal, "unimodal": rebuild_unimodal,
            "hica": rebuild_hica}


def load_run(weights: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a saved run and its description; the run's own JSON says how to build it."""
    desc = description(weights)
    builders = _builders()
    if desc.get("builder") not in builders:
        raise WeightsError(f"{Path(weights).with_suffix('.json')}: unknown builder {desc.get('builder')!r} "
                           f"(known: {sorted(builders)})")
    if desc["builder"] == "classifier":  # the saved state is complete: no pretrained weights to fetch first
        desc_for_build = {**desc, "model": {**desc["model"], "pretrained": False, "weights": None}}
    else:  # only trainable tensors were saved: the frozen base comes from the VFM file the description names
        desc_for_build = desc
    model = builders[desc["builder"]](desc_for_build)
    state = read_weights(weights)
    if desc["builder"] == "unimodal":
        from medrepro.models.adapters import load_adapter_state_dict

        load_adapter_state_dict(model.towers[desc["modality"]], state)
    else:
        result = model.load_state_dict(state, strict=desc["builder"] in ("classifier", "hica"))
        if result.unexpected_keys:
            raise WeightsError(f"{weights} does not fit the model its description builds: "
                               f"unexpected keys {result.unexpected_keys[:5]}")
    return model.eval(), desc


#: what to run when a pre-adapted unimodal state is missing
_UNIMODAL_HINT = "run the preadapt stage (or peft, for EI Table 8)"


def unimodal_selection(init: RunPaths, seed: int, modalities: list[str]) -> dict[str, Any]:
    """The unimodal runs' PEFT method and best validation mAP per modality (EI's modality prior π)."""
    for m in modalities:
        if not init.weights(seed, m).is_file():
            raise WeightsError(f"pre-adapted state for modality {m!r} not found: {init.weights(seed, m)} "
                               f"({_UNIMODAL_HINT})")
    descs = [description(init.weights(seed, m)) for m in modalities]
    methods = {d["method"] for d in descs}
    if len(methods) != 1:
        raise WeightsError(f"unimodal runs under {init.models} mix PEFT methods {sorted(methods)}")
    return {"method": methods.pop(), "val_mAP": [float(d["selection"]["val_mAP"]) for d in descs]}


def unimodal_states(init: RunPaths, seed: int, modalities: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Per-modality trainable states of the unimodal runs (adapters, routers, head)."""
    return {m: read_weights(init.weights(seed, m), _UNIMODAL_HINT) for m in modalities}
