"""The class-mean baseline (a mutation of the `mechanisms` experiment, not a paper method): a "generator" whose
every image of class k is the pixel-wise mean of the real training images of class k it was given — synthetic
images that carry a class's average appearance and nothing a generator learnt. Real + class-mean images against
real + a generator's images asks whether the generator's samples add more than the class mean does.

It is fitted per (seed, modality) on the same real subset and centre-cropped frames as the diffusion generators
(``medrepro.vap.runs.real_images``) and saved like them (weights + description), so ``synthesize`` draws
from it as from any generator.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from medrepro import layout
from medrepro.config import Config
from medrepro.devices import peak_mem_mb, resolve_device
from medrepro.errors import DataError, WeightsError
from medrepro.layout import RunPaths
from medrepro.train.artifacts import finish_run
from medrepro.train.saved import description
from medrepro.vap.gan_runs import resize_uint8
from medrepro.vap.generator import fit_channels
from medrepro.vap.runs import real_images, train_generators

#: the generator name of the class-mean baseline (``real+syn_class_mean`` rows)
CLASS_MEAN = "class_mean"


def class_means(frames: np.ndarray, labels: np.ndarray, classes: list[str], where: str) -> np.ndarray:
    """uint8 (K, H, W, C): the rounded mean frame of each class; a class without images is an error."""
    empty = [c for k, c in enumerate(classes) if not (labels == k).any()]
    if empty:
        raise DataError(f"{where}: no training image of class {empty[0]!r} to average (class_mean generator)")
    return np.stack([frames[labels == k].astype(np.float64).mean(0) for k in range(len(classes))]).round().astype(
        np.uint8)


def fit_one(cfg: Config, dataset: str, subset: str, paths: RunPaths, job: tuple[int, str]) -> dict[str, Any]:
    """The class means of (seed, modality), saved as the generator's weights + description."""
    seed, modality = job
    t0 = time.perf_counter()
    frames, labels, ids, classes = real_images(dataset, modality, subset, seed, cfg.diffusion.image_size)
    names = list(classes["classes"])
    means = class_means(frames, labels, names, f"{dataset}/{modality}/{subset}/seed{seed}")
    desc = {"builder": CLASS_MEAN, "dataset": dataset, "modality": modality, "subset": subset, "seed": seed,
            "classes": names, "n_train": len(ids), "image_size": int(frames.shape[1])}
    finish_run(paths.weights(seed, modality), {"means": torch.from_numpy(means)}, desc, None)
    wall = time.perf_counter() - t0
    return {"seed": seed, "modality": modality, "n_train": len(ids), "samples_per_s": len(ids) / max(wall, 1e-9),
            "peak_mem_mb": peak_mem_mb(torch.device("cpu")), "wall_s": wall}


def run_class_mean(cfg: Config, dataset: str, subset: str | None = None) -> dict[str, Any]:
    """Every (seed, modality) class-mean generator of ``dataset``; write the stage's metrics JSON."""
    subset = subset or cfg.diffusion.train_subset
    paths = layout.generator(dataset, CLASS_MEAN, subset)
    return train_generators(dataset, paths, partial(fit_one, cfg, dataset, subset, paths), cfg.seeds,
                            resolve_device(cfg.device), generator=CLASS_MEAN, train_subset=subset)


def generate_class_mean(weights: Path, labels: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (N, size, size, channels): the mean image of each label's class."""
    description(weights)  # a missing description is an error naming it
    try:
        means = load_file(str(weights))["means"]
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise WeightsError(f"corrupt or mismatched class_mean weights: {weights}: {exc}") from exc
    images = fit_channels(means[torch.from_numpy(np.asarray(labels, dtype=np.int64))], channels, -1)
    return resize_uint8(images.round().to(torch.uint8).numpy(), size)
