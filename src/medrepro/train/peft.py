"""Unimodal PEFT training of a ViT image tower: MoR pre-adaptation (EI Sec. 4.1) and the Table 7 comparison.

For every modality of a dataset, a timm ViT (``ei.vfm``) gets the PEFT method's modules (``apply_adapters``),
is trained on that modality alone with the EI protocol (``train:``), and its trainable state (adapters, routers,
head) is saved as safetensors. The MoR states initialise both the auxiliary and the primary towers of EI.
Volumes (MRNet) are classified per slice and the slice logits pooled by ``ei.slice_pool`` (paper: mean; the
authors' unimodal models max-pool).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from medrepro import layout
from medrepro.config import Config
from medrepro.data.splits import ratio_column
from medrepro.layout import RunPaths
from medrepro.models.adapters import adapter_state_dict, apply_adapters
from medrepro.models.backbones import build_vit, normalization
from medrepro.models.classifier import MultiTowerClassifier
from medrepro.train.runner import RunEnv, SeedRun, run_description, run_stage, stage_header
from medrepro.train.task import load_task


def build_peft_vit(vfm: Mapping[str, Any], method: str, num_classes: int, image_size: int) -> nn.Module:
    """A timm ViT with the PEFT ``method`` applied (base weights frozen as the method prescribes)."""
    vit = build_vit({**vfm, "num_classes": num_classes, "img_size": image_size})
    return apply_adapters(vit, method)


def rebuild_unimodal(desc: Mapping[str, Any]) -> MultiTowerClassifier:
    """The adapted tower of a unimodal run's description, wrapped as a one-modality classifier."""
    tower = build_peft_vit(desc["vfm"], desc["method"], desc["num_classes"], desc["image_size"])
    return MultiTowerClassifier({desc["modality"]: tower}, slice_pool=desc["slice_pool"])


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
