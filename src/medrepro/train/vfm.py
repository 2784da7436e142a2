"""The image-tower weights EI starts from (``models/vfm/vfm.safetensors``), made once by the ``vfm`` stage.

- ``ei.vfm_source: given`` (paper profile): the timm VFM named by ``ei.vfm`` is loaded from the hub or a local
  file (``backbones.build_vit``, failing loudly) and saved, so every later stage loads one verified file.
- ``ei.vfm_source: synthetic`` (embedded default): no foundation model can be downloaded offline, and a randomly
  initialised small ViT learns little from a few hundred images (measured on synth_mm, MoR or fully tuned, SGD 1e-3
  or AdamW: test mAUC 0.49–0.60 on fundus, 0.50–0.78 on oct). So the small ViT is first pretrained, fully and
  supervised, on a *disjoint* pool of synth_mm renderings (own seed, high contrast, no cross-modal leak — a
  shifted domain): each image's own finding (drusen for fundus; fluid for OCT under ``coupling: independent``),
  the side of its membrane / pocket (``coupling: colocated``: where a lesion is, a generic visual attribute), its
  illumination and its modality. It never sees the train/val/test samples, nor the 4-class label — under
  ``colocated`` not even the cross-modal finding, which needs both images. This stands in for a VFM pretrained
  on related data.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medrepro.data.loaders import CachedImages, epoch_batches
from medrepro.data.manifest import load_manifest
from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import get_adapter
from medrepro.models.backbones import build_vit, normalization
from medrepro.train.artifacts import save_weights
from medrepro.train.augment import augment
from medrepro.train.devices import peak_mem_mb, resolve_device, seed_everything

log = logging.getLogger("medrepro")


def pretrain_synthetic(vfm: Mapping[str, Any], cfg: Mapping[str, Any], device: torch.device,
                       work: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Pretrain ``vfm`` (random init) on a disjoint synth_mm pool; return the backbone and its metrics."""
    t0 = time.perf_counter()
    pool = {"n_train": cfg["pool_size"], "n_val": 0, "n_test": 0, "gen_size": cfg["gen_size"],
            "image_size": cfg["image_size"], "difficulty": cfg["difficulty"], "leak": cfg["leak"],
            "coupling": cfg.get("coupling", "independent")}
    adapter = get_adapter("synth_mm", pool)
    fetch(adapter, work / "raw", seed=cfg["seed"])
    prepare(adapter, work / "raw", work / "prepared")
    manifest, _ = load_manifest(work / "prepared")
    mean, std = normalization(vfm)
    images = CachedImages(work / "prepared", ["fundus", "oct"], mean=mean, std=std)
    n = len(manifest)
    label = manifest["label"].to_numpy()
    illum = manifest["attr_illumination"].astype("category").cat.codes.to_numpy().copy()
    # targets per (sample, modality): own finding (-100 = none), lesion side (-100 = none), illumination, modality
    colocated = pool["coupling"] == "colocated"
    oct_finding = np.full(n, -100) if colocated else (label >> 1) & 1  # colocated: fluid needs both images
    finding = torch.from_numpy(np.stack([label & 1, oct_finding], 1)).long()
    if colocated:
        side = np.stack([(manifest[c] == "nasal").to_numpy() for c in ("attr_membrane_side", "attr_pocket_side")], 1)
        side = torch.from_numpy(side.astype(np.int64))
    illum_t = torch.from_numpy(illum).long()

    gen = seed_everything(cfg["seed"])
    backbone = build_vit({**vfm, "pretrained": False, "weights": None, "num_classes": 0, "img_size": cfg["image_size"]})
    dim = backbone.num_features
    heads = nn.ModuleDict({"finding": nn.Linear(dim, 2), "illumination": nn.Linear(dim, 3),
                           "modality": nn.Linear(dim, 2)})
    if colocated:
        heads["side"] = nn.Linear(dim, 2)
    model = nn.ModuleDict({"backbone": backbone, "heads": heads}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], foreach=True)
    half = max(1, cfg["batch_size"] // 2)
    steps = -(-n // half)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * steps)
    seen, train_s, history = 0, 0.0, []
    for _ in range(cfg["epochs"]):
        t1, losses = time.perf_counter(), []
        for idx in itertools.islice(epoch_batches(np.arange(n), half, gen, steps), steps):
            batch = images.batch(idx, train=True, gen=gen)
            x = torch.cat([batch["fundus"], batch["oct"]])
            x = augment(x, {"hflip": True, "crop_pad": 2}, gen).to(device)
            tid = torch.from_numpy(idx)
            feats = model["backbone"](x)
            loss = (F.cross_entropy(heads["finding"](feats), finding[tid].T.flatten().to(device))
                    + F.cross_entropy(heads["illumination"](feats), illum_t[tid].repeat(2).to(device))
                    + F.cross_entropy(heads["modality"](feats),
                                      torch.arange(2).repeat_interleave(len(idx)).to(device)))
            if colocated:
                loss = loss + F.cross_entropy(heads["side"](feats), side[tid].T.flatten().to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            seen += len(x)
        train_s += time.perf_counter() - t1
        history.append(float(np.mean(losses)))
    metrics = {"source": "synthetic", "pool_size": n, "epochs": cfg["epochs"], "loss_history": history,
               "samples_per_s": seen / max(train_s, 1e-9), "peak_mem_mb": peak_mem_mb(device),
               "wall_s": time.perf_counter() - t0}
    return backbone.cpu(), metrics


def make_vfm(params: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """Write the VFM weights file ``out`` (safetensors, no classifier head); return the stage metrics."""
    ei = params["ei"]
    vfm = ei["vfm"]
    device = resolve_device(params["device"])
    if ei["vfm_source"] == "synthetic":
        with tempfile.TemporaryDirectory() as tmp:
            coupling = params["data"]["synth_mm"].get("coupling", "independent")  # the pool follows the dataset
            backbone, metrics = pretrain_synthetic(vfm, {**ei["vfm_pretrain"], "coupling": coupling}, device,
                                                   Path(tmp))
    else:
        t0 = time.perf_counter()
        backbone = build_vit({**vfm, "num_classes": 0})
        metrics = {"source": "given", "weights": vfm.get("weights") or "hub", "wall_s": time.perf_counter() - t0}
    state = backbone.state_dict()
    save_weights(out, state, metadata={"arch": vfm["arch"]})
    metrics["params"] = int(sum(v.numel() for v in state.values()))
    log.info("vfm: %s", {k: v for k, v in metrics.items() if k != "loss_history"})
    return metrics


def tower_cfg(params: Mapping[str, Any], vfm_file: Path = Path("models/vfm/vfm.safetensors")) -> dict[str, Any]:
    """The image-tower config every EI stage uses: ``ei.vfm`` loaded from the ``vfm`` stage's file."""
    return {**params["ei"]["vfm"], "pretrained": True, "weights": str(vfm_file)}
