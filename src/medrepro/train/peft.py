"""Unimodal PEFT training of a ViT image tower: MoR pre-adaptation (EI Sec. 4.1) and the Table 7 comparison.

For every modality of a dataset, a timm ViT (``ei.vfm``) gets the PEFT method's modules (``apply_adapters``),
is trained on that modality alone with the EI protocol (``train:``), and its trainable state (adapters, routers,
head) is saved as safetensors. The MoR states initialise both the auxiliary and the primary towers of EI.
Volumes (MRNet) are classified per slice and the slice logits mean-pooled (the authors' unimodal models max-pool).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrepro.data.manifest import load_manifest
from medrepro.data.splits import ratio_column
from medrepro.models.adapters import adapter_state_dict, apply_adapters, count_trainable
from medrepro.models.backbones import build_vit, normalization
from medrepro.models.classifier import MultiTowerClassifier
from medrepro.train.artifacts import finish_run
from medrepro.train.classify import train_classifier
from medrepro.train.devices import prepare_model, resolve_device, seed_everything
from medrepro.train.downstream import load_task
from medrepro.train.loop import fingerprint
from medrepro.train.parallel import run_side_by_side
from medrepro.train.vfm import tower_cfg

log = logging.getLogger("medrepro")


def build_peft_vit(vfm: Mapping[str, Any], method: str, num_classes: int, image_size: int) -> nn.Module:
    """A timm ViT with the PEFT ``method`` applied (base weights frozen as the method prescribes)."""
    vit = build_vit({**vfm, "num_classes": num_classes, "img_size": image_size})
    return apply_adapters(vit, method)


def adapter_path(models_dir: Path, seed: int, modality: str) -> Path:
    return models_dir / f"seed{seed}" / f"{modality}.safetensors"


def run_unimodal(params: Mapping[str, Any], dataset: str, method: str, ratio: float, models_dir: Path,
                 vfm_file: Path, ckpt_dir: Path | None = None, data_root: Path = Path("data")) -> dict[str, Any]:
    """Train ``method`` on each modality alone for every seed; save trainable states; return the metrics record.

    The (seed, modality) runs are independent: with more than one thread they train side by side
    (``run_side_by_side``), with the same numbers as one after another.
    """
    _, classes = load_manifest(data_root / "prepared" / dataset)
    modalities = list(classes["modalities"])
    job = partial(_train_unimodal, params, dataset, method, ratio, models_dir, vfm_file, ckpt_dir, data_root, classes)
    jobs = [(seed, m) for seed in params["seeds"] for m in modalities]
    runs = run_side_by_side(job, jobs, resolve_device(params["device"]))
    return {"dataset": dataset, "method": method, "real_ratio": ratio, "modalities": modalities,
            "classes": classes["classes"], "runs": runs}


def _train_unimodal(params: Mapping[str, Any], dataset: str, method: str, ratio: float, models_dir: Path,
                    vfm_file: Path, ckpt_dir: Path | None, data_root: Path, classes: Mapping[str, Any],
                    job: tuple[int, str]) -> dict[str, Any]:
    """One (seed, modality) run of ``run_unimodal``: train, save the trainable state, return its metrics."""
    seed, m = job
    vfm, cfg = tower_cfg(params, vfm_file), params["train"]
    device = resolve_device(params["device"])
    data, _ = load_task(dataset, ratio_column(ratio), seed, [m], cfg.get("slices", 4), data_root,
                        norm=normalization(vfm))
    gen = seed_everything(seed)
    tower = build_peft_vit(vfm, method, len(classes["classes"]), classes["image_size"])
    model = prepare_model(MultiTowerClassifier({m: tower}), device, params["compile"])
    desc = {"dataset": dataset, "method": method, "ratio": ratio, "seed": seed, "modality": m,
            "vfm": vfm, "train": cfg}
    ckpt = ckpt_dir / f"seed{seed}_{m}.pt" if ckpt_dir else None
    _, record = train_classifier(model, data, cfg, gen, device, params["precision"], ckpt,
                                 fingerprint(desc), desc=f"{dataset}/{m}/{method}/{ratio:g}/seed{seed}")
    finish_run(adapter_path(models_dir, seed, m), adapter_state_dict(tower), desc, ckpt)
    log.info("%s seed %d %s: test %s", method, seed, m, {k: round(v, 4) for k, v in record["test"].items()})
    return {"seed": seed, "modality": m, "n_real": len(data.train_idx), "n_synthetic": 0,
            "trainable_params": count_trainable(tower, exclude=()), **record}


def load_adapter_states(models_dir: Path, seed: int, modalities: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Per-modality trainable states saved by :func:`run_unimodal`."""
    from safetensors.torch import load_file

    from medrepro.errors import WeightsError

    states = {}
    for m in modalities:
        path = adapter_path(models_dir, seed, m)
        if not path.is_file():
            raise WeightsError(f"pre-adapted state for modality {m!r} not found: {path} (run the preadapt stage)")
        states[m] = load_file(str(path))
    return states
