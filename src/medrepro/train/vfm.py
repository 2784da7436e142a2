"""The image-tower weights EI starts from (``models/vfm/vfm.safetensors``), made once by the ``vfm`` stage.

- ``ei.vfm_source: given`` (paper profile): the timm VFM named by ``ei.vfm`` is loaded from the hub or a local
  file (``backbones.build_vit``, failing loudly) and saved, so every later stage loads one verified file.
- ``ei.vfm_source: synthetic`` (embedded default): no foundation model can be downloaded offline, and a randomly
  initialised small ViT learns little from a few hundred images (measured on synth_mm, MoR or fully tuned, SGD 1e-3
  or AdamW: test mAUC 0.49–0.60 on fundus, 0.50–0.78 on oct). So the small ViT is first pretrained, fully and
  supervised, on a pool it never shares with the task (``ei.vfm_pretrain.domain``):

  - ``scenes`` (default): generic scenes of shapes, colours and gratings (``medrepro.train.scenes``) labelled with
    generic attributes only — another domain than the medical task, as the papers' towers were pretrained on
    natural images. Its frozen features carry the findings only partly, so adaptation has work to do.
  - ``synth_mm``: a *disjoint* pool of synth_mm renderings (own seed, high contrast, no cross-modal leak), each
    image labelled with its own finding (drusen for fundus; fluid for OCT under ``coupling: independent``), the
    side of its membrane / pocket (``coupling: colocated``), its illumination and its modality — a related
    domain whose features already carry each finding linearly. It never sees the train/val/test samples, nor the
    4-class label — under ``colocated`` not even the cross-modal finding, which needs both images.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medrepro import layout
from medrepro.config import AugmentConfig, Config, ModelConfig, VFMPretrainConfig
from medrepro.data.loaders import CachedImages
from medrepro.data.manifest import load_manifest
from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import get_adapter
from medrepro.devices import peak_mem_mb, resolve_device, seed_everything
from medrepro.io import write_json
from medrepro.models.backbones import build_vit, normalization
from medrepro.train.artifacts import finish_run
from medrepro.train.augment import augment
from medrepro.train.loop import FitPlan, fingerprint, run_epochs
from medrepro.train.scenes import TARGETS as SCENE_TARGETS
from medrepro.train.scenes import render_pool

log = logging.getLogger("medrepro")

#: pretraining augmentation: flips and small shifts, no intensity jitter (illumination is a target)
PRETRAIN_AUGMENT = AugmentConfig(hflip=True, crop_pad=2, color_jitter=0.0)


@dataclass
class PretrainTask:
    """A pretraining pool: its size, the classes of each label head, and ``batch(idx, g)`` → (images, targets)."""

    size: int
    heads: dict[str, int]
    batch: Callable[[np.ndarray, torch.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def scenes_task(cfg: VFMPretrainConfig, mean: Any, std: Any) -> PretrainTask:
    """Generic scenes (``medrepro.train.scenes``): the out-of-domain pool, labelled with generic attributes only."""
    images, labels = render_pool(cfg.seed, cfg.pool_size, cfg.image_size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8, normalised per batch
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    y = {k: torch.from_numpy(v) for k, v in labels.items()}

    def batch(idx: np.ndarray, g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tid = torch.from_numpy(idx)
        xb = (x[tid].float() / 255 - m) / s
        return augment(xb, PRETRAIN_AUGMENT, g), {k: v[tid] for k, v in y.items()}

    return PretrainTask(cfg.pool_size, dict(SCENE_TARGETS), batch)


def synth_mm_task(cfg: VFMPretrainConfig, coupling: str, work: Path, mean: Any, std: Any) -> PretrainTask:
    """A disjoint synth_mm pool (the related domain): each image's own finding, lesion side, illumination and
    modality as targets; a batch holds both modalities of its samples."""
    pool = {"n_train": cfg.pool_size, "n_val": 0, "n_test": 0, "gen_size": cfg.gen_size,
            "image_size": cfg.image_size, "difficulty": cfg.difficulty, "leak": cfg.leak, "coupling": coupling}
    adapter = get_adapter("synth_mm", pool)
    fetch(adapter, work / "raw", seed=cfg.seed)
    prepare(adapter, work / "raw", work / "prepared")
    manifest, _ = load_manifest(work / "prepared")
    images = CachedImages(work / "prepared", ["fundus", "oct"], mean=mean, std=std)
    n = len(manifest)
    label = manifest["label"].to_numpy()
    illum = torch.from_numpy(manifest["attr_illumination"].astype("category").cat.codes.to_numpy().copy()).long()
    # targets per (sample, modality): own finding (-100 = none), lesion side, illumination, modality
    colocated = coupling == "colocated"
    oct_finding = np.full(n, -100) if colocated else (label >> 1) & 1  # colocated: fluid needs both images
    finding = torch.from_numpy(np.stack([label & 1, oct_finding], 1)).long()
    heads = {"finding": 2, "illumination": 3, "modality": 2}
    if colocated:
        side = np.stack([(manifest[c] == "nasal").to_numpy() for c in ("attr_membrane_side", "attr_pocket_side")], 1)
        side_t = torch.from_numpy(side.astype(np.int64))
        heads["side"] = 2

    def batch(idx: np.ndarray, g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = images.batch(idx, train=True, gen=g)
        x = augment(torch.cat([b["fundus"], b["oct"]]), PRETRAIN_AUGMENT, g)
        tid = torch.from_numpy(idx)
        y = {"finding": finding[tid].T.flatten(), "illumination": illum[tid].repeat(2),
             "modality": torch.arange(2).repeat_interleave(len(idx))}
        if colocated:
            y["side"] = side_t[tid].T.flatten()
        return x, y

    return PretrainTask(n, heads, batch)


def pretrain_synthetic(vfm: ModelConfig, cfg: VFMPretrainConfig, coupling: str, device: torch.device,
                       precision: str, work: Path, ckpt: Path | None = None,
                       backbone: nn.Module | None = None,
                       norm: tuple[Any, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Pretrain ``vfm`` (random init) on the ``cfg.domain`` pool; return the backbone and its metrics.
    ``backbone``: another randomly initialised feature extractor (``num_classes=0``: pooled features) trained the
    same way instead of ``vfm``'s ViT — the HiCA transfer-learning CNN (``medrepro.hica.baselines``) — with
    its own input normalisation ``norm`` (mean, std)."""
    t0 = time.perf_counter()
    tower = vfm.as_dict()
    mean, std = norm or normalization(tower)
    if cfg.domain == "scenes":
        task = scenes_task(cfg, mean, std)
    else:
        task = synth_mm_task(cfg, coupling, work, mean, std)
    gen = seed_everything(cfg.seed)
    if backbone is None:
        backbone = build_vit({**tower, "pretrained": False, "weights": None, "num_classes": 0,
                              "img_size": cfg.image_size})
    dim = backbone.num_features
    heads = nn.ModuleDict({k: nn.Linear(dim, c) for k, c in task.heads.items()})
    model = nn.ModuleDict({"backbone": backbone, "heads": heads}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    # synth_mm: a batch holds both modalities of half as many samples
    per_batch = cfg.batch_size if cfg.domain == "scenes" else max(1, cfg.batch_size // 2)
    steps = -(-task.size // per_batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)

    def loss_fn(idx: np.ndarray, g: torch.Generator) -> torch.Tensor:
        x, y = task.batch(idx, g)
        feats = model["backbone"](x.to(device))
        return sum(F.cross_entropy(heads[k](feats), t.to(device)) for k, t in y.items())

    plan = FitPlan(batch_size=per_batch, steps_per_epoch=steps, max_epochs=cfg.epochs, patience=cfg.epochs)
    run_id = fingerprint({"vfm": tower, "pretrain": vars(cfg), "coupling": coupling,
                          "backbone": type(backbone).__name__, "params": sum(p.numel() for p in backbone.parameters())})
    result = run_epochs(model, loss_fn, None, np.arange(task.size), plan, opt, sched, gen, device, precision, ckpt,
                        run_id, desc="vfm pretraining")
    images_per_sample = 1 if cfg.domain == "scenes" else 2  # synth_mm: a sample is a (fundus, oct) pair
    metrics = {"source": "synthetic", "domain": cfg.domain, "pool_size": task.size, "epochs": result.epochs_run,
               "loss_history": [h["loss"] for h in result.history],
               "samples_per_s": images_per_sample * result.samples_per_s,  # images/s
               "peak_mem_mb": peak_mem_mb(device), "wall_s": time.perf_counter() - t0,
               "resumed_from_epoch": result.resumed_from}
    return backbone.cpu(), metrics


def make_vfm(cfg: Config, paths: layout.RunPaths = layout.VFM) -> dict[str, Any]:
    """Write the VFM weights (safetensors, no classifier head) and their description; return the stage metrics."""
    vfm = cfg.ei.vfm
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    ckpt = paths.checkpoint(cfg.ei.vfm_pretrain.seed)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)  # exists even when empty: a DVC output of the stage
    if cfg.ei.vfm_source == "synthetic":
        coupling = cfg.dataset_options("synth_mm")["coupling"]  # the pretraining pool follows the dataset
        with tempfile.TemporaryDirectory() as tmp:
            backbone, metrics = pretrain_synthetic(vfm, cfg.ei.vfm_pretrain, coupling, device, cfg.precision,
                                                   Path(tmp), ckpt)
        source: dict[str, Any] = {"source": "synthetic", "pretrain": vars(cfg.ei.vfm_pretrain), "coupling": coupling}
    else:
        backbone = build_vit({**vfm.as_dict(), "num_classes": 0})
        metrics = {"source": "given", "weights": vfm.weights or "hub", "wall_s": time.perf_counter() - t0}
        source = {"source": "given", "weights": vfm.weights or "hub"}
    state = backbone.state_dict()
    finish_run(paths.models / layout.VFM_WEIGHTS.name, state, {"builder": "vit", "vfm": vfm.as_dict(), **source},
               ckpt, metadata={"arch": vfm.arch})
    metrics["params"] = int(sum(v.numel() for v in state.values()))
    log.info("vfm: %s", {k: v for k, v in metrics.items() if k != "loss_history"})
    write_json(paths.metrics, metrics)
    return metrics
