"""Stage train_diffusion's library: one generator per (seed, modality) of a dataset, variant and real subset.

Each modality of a multimodal dataset gets its own generator (the paper generates single images); they train side
by side in forked workers when the stage has threads to spare (``medrepro.train.parallel``). A generator sees the
``diffusion.train_subset`` of the train split (``ratio_1.0``: all of it, what the paper's Table 3 most plausibly
did), with the VAPS caption t_mix of each image (``captions`` stage) as its text condition.

The text tower encodes on the run's device, once, into a float16 file in the checkpoint folder that training reads
per batch (``medrepro.vap.conditions``). A run that finished before a crash is kept across the rerun
(``medrepro.vap.units``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrepro import layout
from medrepro.config import Config
from medrepro.data.generator_cache import open_generator_cache
from medrepro.data.manifest import load_manifest
from medrepro.devices import peak_mem_mb, resolve_device, seed_everything
from medrepro.errors import DataError
from medrepro.io import write_json
from medrepro.layout import RunPaths
from medrepro.models.text import TextTowerConfig, build_text_tower
from medrepro.models.uvit import UViT
from medrepro.train.artifacts import finish_run
from medrepro.train.parallel import run_side_by_side
from medrepro.vap.conditions import DiskContexts, encode_conditions
from medrepro.vap.generator import (
    SHUFFLED,
    Space,
    describe,
    shuffle_within_class,
    to_model_range,
    uvit_config,
    variant_flags,
)
from medrepro.vap.train import train_generator
from medrepro.vap.units import clear_units, keep_unit, reuse_unit, unit_key
from medrepro.vap.vae import LatentCodec, load_vae

log = logging.getLogger("medrepro")


def real_images(dataset: str, modality: str, subset: str, seed: int, size: int) -> tuple[np.ndarray, np.ndarray,
                                                                                          list[str], dict[str, Any]]:
    """uint8 frames (N, size, size, C) from the generators' centre-cropped cache (``generator_images`` stage),
    class indices and sample ids of ``subset`` (train split) for one modality."""
    root = layout.prepared(dataset)
    manifest, classes = load_manifest(root)
    if classes.get("volumetric"):
        raise DataError(f"{dataset}: VAP-Diffusion generates 2-D images; {dataset} holds volumes")
    if classes["task"] == "multilabel":
        raise DataError(f"{dataset}: VAP-Diffusion conditions on one class per image; {dataset} is multi-label")
    subsets_file = layout.subsets(dataset)
    subsets = pd.read_parquet(subsets_file)
    if subset not in subsets.columns:
        raise DataError(f"{subsets_file} has no subset column {subset!r} (diffusion.train_subset)")
    chosen = set(subsets.loc[(subsets["seed"] == seed) & subsets[subset], "sample_id"])
    rows = np.flatnonzero(manifest["sample_id"].isin(chosen).to_numpy() & (manifest["split"] == "train").to_numpy())
    frames, offsets = open_generator_cache(layout.generator_images(dataset), modality, size)
    return (np.asarray(frames[offsets[rows]]), manifest["label"].to_numpy()[rows].astype(np.int64),
            manifest["sample_id"].astype(str).to_numpy()[rows].tolist(), classes)


def captions_of(dataset: str, modality: str, sample_ids: list[str]) -> list[str]:
    """t_mix of each sample's ``modality`` image (VAP-Diffusion Sec. 2.2); every one must exist."""
    path = layout.captions(dataset)
    if not path.is_file():
        raise DataError(f"captions missing: {path} (run the caption stage)")
    caps = pd.read_parquet(path)
    caps = caps[caps["modality"] == modality].set_index("sample_id")["t_mix"]
    lacking = [s for s in sample_ids if s not in caps.index]
    if lacking:
        raise DataError(f"{path}: no {modality} caption for sample {lacking[0]!r} ({len(lacking)} missing)")
    return caps.loc[sample_ids].astype(str).tolist()


def encode_images(frames: np.ndarray, size: int, codec: LatentCodec | None, device: torch.device,
                  batch: int = 64) -> torch.Tensor:
    """uint8 frames (N, H, W, C) → the diffusion space: pixels in [-1, 1] at ``size``, or SD-VAE latents encoded
    once, ``batch`` images at a time (never all N images as float pixels at once)."""
    if codec is None:
        return to_model_range(torch.from_numpy(frames), size)
    out = []
    for i in range(0, len(frames), batch):
        x = to_model_range(torch.from_numpy(frames[i:i + batch]), size)
        out.append(codec.encode((x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).to(device)).cpu())
    return torch.cat(out)


def train_one(cfg: Config, dataset: str, variant: str, subset: str, paths: RunPaths,
              job: tuple[int, str]) -> dict[str, Any]:
    """Train the generator of (seed, modality); save EMA weights + description; return its metrics record."""
    seed, modality = job
    t0 = time.perf_counter()
    dc = cfg.diffusion
    device = resolve_device(cfg.device)
    frames, labels, ids, classes = real_images(dataset, modality, subset, seed, dc.image_size)
    names = list(classes["classes"])
    space = Space(dc.space, dc.image_size, frames.shape[-1])
    text, _ = variant_flags(variant)
    captions = captions_of(dataset, modality, ids) if text else None
    if captions is not None and variant in SHUFFLED:
        captions = shuffle_within_class(captions, labels, seed)
    tower = build_text_tower(TextTowerConfig(**dc.text.tower()), device) if text else None
    uvit = uvit_config(dc, variant, len(names), space, tower.dim if tower else None)
    desc = describe(dc, variant, uvit, space, names, dataset=dataset, modality=modality, subset=subset, seed=seed,
                    n_train=len(ids))
    key = unit_key(desc, "medrepro.stages.train_diffusion", frames, labels, ids, captions or [])
    kept = reuse_unit(paths, seed, modality, key)
    if kept is not None:
        return kept
    codec = load_vae(dc.vae, device) if dc.space == "latent" else None
    x0 = encode_images(frames, dc.image_size, codec, device)
    del codec, frames
    ckpt = paths.checkpoint(seed, modality)
    store = ckpt.with_suffix(".contexts.f16")  # overwritten by a rerun, deleted when the run ends
    conds = None
    try:
        conds = encode_conditions(torch.from_numpy(labels), len(names), captions, tower, dc.text.pool, store)
        del tower
        gen = seed_everything(seed)  # initial weights depend on the seed only
        net = UViT(uvit)
        label = f"{dataset}/{modality}/{variant}/seed{seed}"
        model, fit = train_generator(net, x0, conds, dc, gen, device, cfg.precision, ckpt, key, label,
                                     compile_net=cfg.compile)
    finally:
        if conds is not None and isinstance(conds.context, DiskContexts):
            conds.context.close()
        store.unlink(missing_ok=True)
    finish_run(paths.weights(seed, modality), model.ema.state_dict(),
               {**desc, "selection": {"steps": fit.epochs_run * dc.train.checkpoint_every}}, None)
    log.info("%s: final loss %.4f", label, fit.history[-1]["loss"])
    record = {"seed": seed, "modality": modality, "n_train": len(ids), "steps": dc.train.steps,
              "trainable_params": sum(p.numel() for p in net.parameters()), "history": fit.history,
              "final_loss": fit.history[-1]["loss"], "samples_per_s": fit.samples_per_s, "train_s": fit.train_s,
              "resumed_from_checkpoint": fit.resumed_from, "kept_from_earlier_run": False,
              "peak_mem_mb": peak_mem_mb(device), "wall_s": time.perf_counter() - t0}
    keep_unit(paths, seed, modality, key, record)
    return record


def train_generators(dataset: str, paths: RunPaths, train: Callable[[tuple[int, str]], dict[str, Any]],
                     seeds: Sequence[int], device: torch.device, **header: Any) -> dict[str, Any]:
    """``train((seed, modality))`` for every seed and modality of ``dataset`` (side by side where threads allow);
    write the stage's metrics JSON (``header`` + the runs). Shared by train_diffusion and train_gan."""
    paths.checkpoints.mkdir(parents=True, exist_ok=True)  # a DVC output even when empty
    _, classes = load_manifest(layout.prepared(dataset))
    jobs = [(seed, m) for seed in seeds for m in classes["modalities"]]
    runs = run_side_by_side(train, jobs, device)
    record = {"dataset": dataset, **header, "classes": classes["classes"], "modalities": classes["modalities"],
              "runs": runs}
    write_json(paths.metrics, record)
    clear_units(paths)
    return record


def run_train_diffusion(cfg: Config, dataset: str, variant: str, subset: str | None = None) -> dict[str, Any]:
    """Every (seed, modality) generator of ``variant`` on ``dataset``; write the stage's metrics JSON."""
    subset = subset or cfg.diffusion.train_subset
    paths = layout.generator(dataset, variant, subset)
    return train_generators(dataset, paths, partial(train_one, cfg, dataset, variant, subset, paths), cfg.seeds,
                            resolve_device(cfg.device), variant=variant, train_subset=subset)
