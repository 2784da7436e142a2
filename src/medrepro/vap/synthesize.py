"""Stage synthesize's library: synthetic samples per class from the class-specific prompt bank (VAP-Diffusion
Sec. 2.3), paired across a dataset's modalities, written as PNGs + provenance manifest + image cache.

Paired synthesis: each synthetic sample draws one real training sample of its class from the bank and uses that
sample's t_mix of every modality, so the modalities of one synthetic sample describe one (real) patient and the
pair can train a multimodal model such as EI. The class-only variant has no text: its modalities share the label
only. Images are stored at the prepared dataset's resolution, so they join the real image cache as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from tqdm.auto import tqdm

from medrepro import layout
from medrepro.config import Config, NoiseConfig
from medrepro.data.cache import CACHE_DIR, open_cache
from medrepro.data.manifest import load_manifest
from medrepro.devices import peak_mem_mb, resolve_device
from medrepro.errors import DataError, WeightsError
from medrepro.io import atomic_path, write_json
from medrepro.models.text import TextTowerConfig, build_text_tower
from medrepro.models.uvit import UViT
from medrepro.progress import progress_disabled
from medrepro.train.saved import description
from medrepro.vap.conditions import Conditions, encode_conditions
from medrepro.vap.generator import build_uvit, space_of, text_config, to_uint8, vae_config
from medrepro.vap.grids import sample_grid
from medrepro.vap.sample import sample
from medrepro.vap.vae import load_vae

log = logging.getLogger("medrepro")


def load_generator(weights: Path, device: torch.device) -> tuple[UViT, dict[str, Any]]:
    """The EMA denoiser saved by train_diffusion and its description; a corrupt file is an error naming it."""
    desc = description(weights)
    if not Path(weights).is_file():
        raise WeightsError(f"generator weights not found: {weights} (made by the train_diffusion stage)")
    net = build_uvit(desc)
    try:
        state = load_file(str(weights))
        net.load_state_dict(state)
    except Exception as exc:  # safetensors and torch raise several types for a damaged file
        raise WeightsError(f"corrupt or mismatched generator weights: {weights}: {exc}") from exc
    return net.to(device).eval(), desc


def bank_rows(dataset: str, bank: str, seed: int, classes: list[str], modalities: list[str]) -> pd.DataFrame:
    """The prompt bank's t_mix of ``bank`` (train: of split seed ``seed``), one row per (sample, modality); every
    class needs at least one sample with a caption of every modality."""
    path = layout.caption_bank(dataset)
    if not path.is_file():
        raise DataError(f"prompt bank missing: {path} (run the caption stage)")
    b = pd.read_parquet(path)
    b = b[(b["bank"] == bank) & ((b["seed"] == seed) if bank == "train" else True)]
    for k, name in enumerate(classes):
        for m in modalities:
            if not ((b["label"] == k) & (b["modality"] == m)).any():
                raise DataError(f"{path}: the {bank} bank has no {m} caption of class {name!r}"
                                + (f" (split seed {seed})" if bank == "train" else ""))
    return b


def draw_sources(bank: pd.DataFrame, counts: Sequence[int], modalities: list[str],
                 rng: np.random.Generator) -> pd.DataFrame:
    """``counts[k]`` source samples of class k (uniform, with replacement), each with its t_mix of every modality."""
    wide = bank.pivot_table(index=["sample_id", "label"], columns="modality", values="t_mix", aggfunc="first")
    wide = wide.dropna(subset=modalities).reset_index()
    rows = []
    for k, n in enumerate(counts):
        pool = wide[wide["label"] == k]
        if pool.empty:
            raise DataError(f"prompt bank: no sample of class {k} has captions of every modality {modalities}")
        picks = pool.iloc[rng.integers(0, len(pool), int(n))]
        rows.append(picks.assign(label=k))
    return pd.concat(rows, ignore_index=True)


def generate(weights: Path, texts: list[str] | None, labels: np.ndarray, seed: int, size: int, channels: int,
             cfg: Config, device: torch.device) -> np.ndarray:
    """uint8 (N, size, size, channels) images of one generator for ``labels`` (and ``texts`` when it uses text)."""
    net, desc = load_generator(weights, device)
    space = space_of(desc)
    tcfg = text_config(desc)
    tower = build_text_tower(TextTowerConfig(**tcfg.tower()), device) if tcfg is not None else None
    conds: Conditions = encode_conditions(torch.from_numpy(labels.copy()), net.null_class,  # texts encoded per batch
                                          texts if tower else None, tower, tcfg.pool if tcfg else 1)
    gen = torch.Generator().manual_seed(seed)
    x = sample(net, NoiseConfig(**desc["noise"]), cfg.diffusion.sample, (space.channels, space.size, space.size), conds,
               torch.arange(len(labels)), gen, device, cfg.precision, desc=f"sample {weights.parent.name}",
               pixel_space=space.kind == "pixel")
    vcfg = vae_config(desc)
    if vcfg is not None:
        codec = load_vae(vcfg, device)
        x = torch.cat([codec.decode(x[i:i + 32].to(device)).cpu() for i in range(0, len(x), 32)])
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return to_uint8(x, channels).numpy()


def generate_any(weights: Path, texts: list[str] | None, labels: np.ndarray, seed: int, size: int, channels: int,
                 cfg: Config, device: torch.device) -> np.ndarray:
    """Images of a saved diffusion generator, GAN or class-mean baseline (its description's builder says which)."""
    builder = description(weights).get("builder")
    if builder == "stylegan":
        from medrepro.vap.gan_runs import generate_gan

        return generate_gan(weights, labels, seed, size, channels, device)
    if builder == "class_mean":
        from medrepro.vap.class_mean import generate_class_mean

        return generate_class_mean(weights, labels, size, channels)
    return generate(weights, texts, labels, seed, size, channels, cfg, device)


def write_set(out: Path, manifest: pd.DataFrame, images: dict[str, np.ndarray]) -> None:
    """PNGs under ``images/<modality>/``, the cache (``medrepro.data.cache`` format) and the manifest, atomically."""
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / CACHE_DIR).mkdir(parents=True)
        for m, arr in images.items():
            folder = tmp / "images" / m
            folder.mkdir(parents=True)
            paths = []
            for sid, img in tqdm(zip(manifest["sample_id"], arr, strict=True), total=len(arr), desc=f"png {m}",
                                 disable=progress_disabled()):
                Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(folder / f"{sid}.png")
                paths.append(f"images/{m}/{sid}.png")
            manifest[f"path_{m}"] = paths
            np.save(tmp / CACHE_DIR / f"{m}.npy", arr)
            np.save(tmp / CACHE_DIR / f"{m}.offsets.npy", np.arange(len(arr) + 1, dtype=np.int64))
        manifest.to_parquet(tmp / "manifest.parquet", index=False)


def run_synthesize(cfg: Config, dataset: str, variant: str) -> dict[str, Any]:
    """``synthesis.per_class`` paired samples per class and seed from the ``variant`` generators (or the GAN, or the
    class-mean baseline);
    ``variant`` may name the real subset they trained on (``vap-ratio_0.01``, ``layout.generator_id``)."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    prepared = layout.prepared(dataset)
    _, classes = load_manifest(prepared)
    names, modalities, size = list(classes["classes"]), list(classes["modalities"]), int(classes["image_size"])
    name, subset = layout.parse_generator_id(variant)
    gens = layout.generator(dataset, name, subset or cfg.diffusion.train_subset)
    per_class, bank_name = cfg.synthesis.per_class, cfg.synthesis.bank
    frames, images, sample_s = [], {m: [] for m in modalities}, 0.0
    channels = {m: int(open_cache(prepared, m)[0].shape[-1]) for m in modalities}
    for seed in cfg.seeds:
        bank = bank_rows(dataset, bank_name, seed, names, modalities)
        sources = draw_sources(bank, [per_class] * len(names), modalities, np.random.default_rng([seed, 1]))
        labels = sources["label"].to_numpy(np.int64)
        text_used = bool(description(gens.weights(seed, modalities[0])).get("text"))  # one variant: all or none
        for j, m in enumerate(modalities):
            texts = sources[m].astype(str).tolist() if text_used else None
            ts = time.perf_counter()
            images[m].append(generate_any(gens.weights(seed, m), texts, labels, seed * 1000 + j, size,
                                          channels[m], cfg, device))
            sample_s += time.perf_counter() - ts
        frame = pd.DataFrame({
            "sample_id": [f"syn-{variant}-s{seed}-{i:05d}" for i in range(len(sources))],
            "seed": seed, "label": labels, "class_name": [names[k] for k in labels], "generator": variant,
            "bank": bank_name, "source_sample": sources["sample_id"].astype(str).to_numpy() if text_used else None})
        for m in modalities:
            frame[f"caption_{m}"] = sources[m].astype(str).to_numpy() if text_used else None
        frames.append(frame)
    manifest = pd.concat(frames, ignore_index=True)
    stacked = {m: np.concatenate(v) for m, v in images.items()}
    out = layout.synthetic(dataset, variant)
    write_set(out, manifest, stacked)
    grid = layout.synthetic_grid(dataset, variant)
    sample_grid(prepared, manifest, stacked, names, modalities, cfg.synthesis.grid_per_class, grid,
                title=f"{dataset} · {variant}")
    n = len(manifest) * len(modalities)
    record = {"dataset": dataset, "variant": variant, "bank": bank_name, "per_class": per_class,
              "seeds": list(cfg.seeds), "n_samples": len(manifest), "n_images": n,
              "sampler": vars(cfg.diffusion.sample), "sampling_images_per_s": n / max(sample_s, 1e-9),
              "peak_mem_mb": peak_mem_mb(device), "wall_s": time.perf_counter() - t0}
    write_json(layout.synthesis_metrics(dataset, variant), record)
    log.info("synthesize %s/%s: %d samples, %.1f images/s", dataset, variant, len(manifest),
             record["sampling_images_per_s"])
    return record
