"""Batch-wise tensor augmentation (flip, shift, brightness/contrast) driven by a seeded generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medrepro.config import AugmentConfig


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment (N, C, H, W) normalised images; per-sample random flips, shifts and intensity scaling.

    A light stand-in for the EI authors' pipeline (rotation, crop, flip, colour jitter; UPSTREAM.md), applied on
    tensors so that the training loop never touches PIL.
    """
    n = x.shape[0]
    if cfg.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    pad = int(cfg.crop_pad)
    if pad:
        h, w = x.shape[-2:]
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy.view(-1, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
        x = padded.gather(2, rows)
        cols = (dx.view(-1, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    jitter = float(cfg.color_jitter)
    if jitter:
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        brightness = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + brightness
    return x
