"""Unimodal PEFT training of a ViT image tower: MoR pre-adaptation (EI Sec. 4.1) and the Table 7 comparison.

For every modality of a dataset, a timm ViT (``ei.vfm``) gets the PEFT method's modules (``apply_adapters``),
is trained on that modality alone with the EI protocol (``train:``), and its trainable state (adapters, routers,
head) is saved as safetensors. The MoR states initialise both the auxiliary and the primary towers of EI.
Volumes (MRNet) are classified per slice and the slice logits pooled by ``ei.slice_pool`` (paper: mean; the
authors' unimodal models max-pool).

``predict_lora_zeroed``: the saved pre-adaptation runs scored again with their LoRA up-projections zeroed — the
trained head on the frozen tower's features — for the `mechanisms` experiment's "MoR vs zeroed adapters".
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from medrepro import layout
from medrepro.config import Config
from medrepro.data.splits import ratio_column
from medrepro.devices import resolve_device
from medrepro.errors import WeightsError
from medrepro.io import atomic_path
from medrepro.layout import RunPaths
from medrepro.models.adapters import adapter_state_dict, apply_adapters, load_adapter_state_dict, lora_zeroed
from medrepro.models.backbones import build_vit, normalization
from medrepro.models.classifier import MultiTowerClassifier
from medrepro.train.classify import predict
from medrepro.train.runner import RunEnv, SeedRun, predictions_frame, run_description, run_stage, stage_header
from medrepro.train.saved import description, load_saved, read_weights
from medrepro.train.task import load_task


def build_peft_vit(vfm: Mapping[str, Any], method: str, num_classes: int, image_size: int) -> nn.Module:
    """A timm ViT with the PEFT ``method`` applied (base weights frozen as the method prescribes)."""
    vit = build_vit({**vfm, "num_classes": num_classes, "img_size": image_size})
    return apply_adapters(vit, method)


def rebuild_unimodal(desc: Mapping[str, Any]) -> MultiTowerClassifier:
    """The adapted tower of a unimodal run's description, wrapped as a one-modality classifier."""
    tower = build_peft_vit(desc["vfm"], desc["method"], desc["num_classes"], desc["image_size"])
    return MultiTowerClassifier({desc["modality"]: tower}, slice_pool=desc["slice_pool"])


def load_unimodal(weights: Path) -> tuple[MultiTowerClassifier, dict[str, Any]]:
    """A saved unimodal run (its trainable state on the frozen tower the description names) and its description."""
    def load(model: nn.Module, desc: Mapping[str, Any], state: dict[str, torch.Tensor]) -> None:
        load_adapter_state_dict(model.towers[desc["modality"]], state)

    return load_saved(weights, "unimodal", rebuild_unimodal, load=load)


def _adapter_state(modality: str, net: nn.Module, model: nn.Module) -> dict:
    return adapter_state_dict(net.towers[modality])


def unimodal_run(cfg: Config, dataset: str, method: str, ratio: float, paths: RunPaths, vfm_file: Path,
                 job: tuple[int, str]) -> SeedRun:
    """One (seed, modality) run: ``method`` on modality alone, on the ``ratio`` real subset."""
    seed, m = job
    vfm = cfg.ei.tower(vfm_file)
    data, classes = load_task(dataset, ratio_column(ratio), seed, [m], cfg.train.slices, norm=normalization(vfm))
    desc = {**run_description("unimodal", dataset, method, ratio, seed, classes, cfg.train), "modality": m,
            "vfm": vfm, "slice_pool": cfg.ei.slice_pool}
    return SeedRun(label=f"{dataset}/{m}/{method}/{ratio:g}/seed{seed}", seed=seed, data=data,
                   classes=classes["classes"], train=cfg.train, build=partial(rebuild_unimodal, desc),
                   description=desc, weights=paths.weights(seed, m), checkpoint=paths.checkpoint(seed, m),
                   saved_state=partial(_adapter_state, m), keys={"modality": m})


def run_unimodal(cfg: Config, dataset: str, method: str, ratio: float, paths: RunPaths,
                 vfm_file: Path = layout.VFM_WEIGHTS) -> dict[str, Any]:
    """Train ``method`` on each modality alone for every seed; write states, metrics and predictions.

    The (seed, modality) runs are independent: with more than one thread they train side by side
    (``medrepro.train.parallel``), with the same numbers as one after another.
    """
    header = stage_header(dataset, method=method, real_ratio=ratio)
    jobs = [(seed, m) for seed in cfg.seeds for m in header["modalities"]]
    return run_stage(paths, header, partial(unimodal_run, cfg, dataset, method, ratio, paths, vfm_file), jobs,
                     RunEnv.from_config(cfg), side_by_side=True)


def predict_lora_zeroed(cfg: Config, dataset: str) -> pd.DataFrame:
    """Test predictions of every (seed, modality) pre-adaptation run of ``ei.adapter`` on the whole train split,
    with its LoRA up-projections zeroed (``models.adapters.lora_zeroed``); written to ``layout.lora_zeroed``."""
    device = resolve_device(cfg.device)
    paths = layout.preadapt(dataset, cfg.ei.adapter, layout.FULL)
    frames, modalities = [], stage_header(dataset)["modalities"]
    for seed in cfg.seeds:
        for m in modalities:
            model, desc = load_unimodal(paths.weights(seed, m))
            data, classes = load_task(dataset, ratio_column(layout.FULL), seed, [m], cfg.train.slices,
                                      norm=normalization(desc["vfm"]))
            with lora_zeroed(model.to(device)):
                probs = predict(model, data, data.test_idx, device, precision=cfg.precision)
            facts = {"seed": seed, "modality": m, "n_real": data.n_real, "n_synthetic": data.n_synthetic}
            frames.append(predictions_frame(data, data.test_idx, probs, classes["classes"], facts))
    out = pd.concat(frames, ignore_index=True)
    with atomic_path(layout.lora_zeroed(dataset, cfg.ei.adapter)) as tmp:
        out.to_parquet(tmp, index=False)
    return out


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
