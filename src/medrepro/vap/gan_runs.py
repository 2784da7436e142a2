"""Stage train_gan's library: the StyleGAN2-style baseline of VAP-Diffusion Table 3 ("+ synthetic StyleGAN"), one
class-conditional generator per (seed, modality) on the same real data as the diffusion generators."""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from medrepro import layout
from medrepro.config import Config
from medrepro.devices import resolve_device
from medrepro.errors import WeightsError
from medrepro.layout import RunPaths
from medrepro.models.stylegan import Generator, StyleGANConfig, stylegan_profile
from medrepro.train.artifacts import finish_run
from medrepro.train.saved import description
from medrepro.vap.gan import gan_train_profile, sample_gan, train_gan
from medrepro.vap.generator import fit_channels
from medrepro.vap.runs import real_images, train_generators
from medrepro.vap.units import keep_unit, reuse_unit, unit_key

log = logging.getLogger("medrepro")

#: the generator name of the GAN baseline (``real+syn_gan`` rows)
GAN = "gan"


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) resized to ``size`` px (bilinear, antialiased); unchanged when it already is."""
    if images.shape[1] == size:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def train_one(cfg: Config, dataset: str, subset: str, paths: RunPaths, job: tuple[int, str]) -> dict[str, Any]:
    """Train the GAN of (seed, modality); save its EMA generator + description; return the run's record."""
    seed, modality = job
    t0 = time.perf_counter()
    frames, labels, ids, classes = real_images(dataset, modality, subset, seed, cfg.diffusion.image_size)
    names = list(classes["classes"])
    model = stylegan_profile(cfg.gan.profile, len(names), frames.shape[-1])
    train = dataclasses.replace(gan_train_profile(cfg.gan.profile), steps=cfg.gan.steps,
                                batch_size=cfg.gan.batch_size, checkpoint_every=cfg.gan.checkpoint_every,
                                augment_hflip=cfg.gan.hflip)
    desc = {"builder": "stylegan", "model": model.as_dict(), "train": train.as_dict(), "dataset": dataset,
            "modality": modality, "subset": subset, "seed": seed, "classes": names, "n_train": len(ids)}
    key = unit_key(desc, "medrepro.stages.train_gan", frames, labels, ids)
    kept = reuse_unit(paths, seed, modality, key)  # finished before a crash: not trained again
    if kept is not None:
        return kept
    ckpt = paths.checkpoint(seed, modality)
    generator, record = train_gan(resize_uint8(frames, model.img_size), labels, len(names), model, train, seed,
                                  resolve_device(cfg.device), ckpt, key, f"{dataset}/{modality}/gan")
    finish_run(paths.weights(seed, modality), generator.state_dict(), desc, None)
    out = {"seed": seed, "modality": modality, "n_train": len(ids), **{k: v for k, v in record.items()
                                                                       if k not in ("model", "train")},
           "kept_from_earlier_run": False, "wall_s": time.perf_counter() - t0}
    keep_unit(paths, seed, modality, key, out)
    return out


def run_train_gan(cfg: Config, dataset: str, subset: str | None = None) -> dict[str, Any]:
    """Every (seed, modality) GAN of ``dataset``; write the stage's metrics JSON."""
    subset = subset or cfg.diffusion.train_subset
    paths = layout.generator(dataset, GAN, subset)
    return train_generators(dataset, paths, partial(train_one, cfg, dataset, subset, paths), cfg.seeds,
                            resolve_device(cfg.device), generator=GAN, train_subset=subset)


def generate_gan(weights: Path, labels: np.ndarray, seed: int, size: int, channels: int,
                 device: torch.device) -> np.ndarray:
    """uint8 (N, size, size, channels) images of a saved GAN generator for ``labels``."""
    desc = description(weights)
    generator = Generator(StyleGANConfig(**desc["model"]))
    try:
        generator.load_state_dict(load_file(str(weights)))
    except Exception as exc:  # safetensors and torch raise several types for a damaged file
        raise WeightsError(f"corrupt or mismatched GAN weights: {weights}: {exc}") from exc
    images = fit_channels(torch.from_numpy(sample_gan(generator, labels, seed, device)), channels, -1)
    return resize_uint8(images.round().to(torch.uint8).numpy(), size)
