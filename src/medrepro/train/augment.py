"""Batch-wise tensor augmentation driven by a seeded generator, on normalised images, never through PIL.

Two pipelines share one function (``AugmentConfig``):

- the embedded stand-in: flips, shifts (reflect-padded crop) and additive brightness/contrast;
- the EI authors' pipeline (their public code; the paper profile): rotation by U[-r, r] degrees (expanded and cropped
  back, i.e. rotated in place with black corners), with probability ``crop_p`` a random crop of up to ``crop_max``
  of each side resized back, a horizontal flip, and contrast, brightness and saturation each × U(1 − j, 1 + j).
  Rotation and crop are one bilinear resampling; the colour ops run on pixels in [0, 1] (clamped after each, as
  torchvision) in a fixed order brightness → contrast → saturation, where torchvision draws a random order.

``augment_with_masks`` carries binary masks (a lesion's, HiCA's mask ROIs) through the same geometric ops as their
images (rotation, crop, flip, shift: the same draws), thresholded at one half after resampling; colour ops leave
them alone. The images come out exactly as ``augment`` makes them. Its ``scale`` augments a copy of the images
``scale`` times larger with the same draws (a cloned generator): every draw is size-free except the shift, which
is drawn in the small image's pixels and applied ``scale`` times (HiCA's full-resolution ROI copy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medrepro.config import AugmentConfig

#: ITU-R 601 luma weights (torchvision's rgb_to_grayscale)
_LUMA = (0.299, 0.587, 0.114)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
            norm: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Augment (N, C, H, W) normalised images. ``norm`` = (mean, std) as (1, C, 1, 1) tensors of [0, 1] pixels:
    needed by the authors' ops (black corners, colour jitter in pixel space); the stand-in works without it."""
    return augment_with_masks(x, None, cfg, gen, norm)[0]


def augment_with_masks(x: torch.Tensor, masks: torch.Tensor | None, cfg: AugmentConfig, gen: torch.Generator,
                       norm: tuple[torch.Tensor, torch.Tensor] | None = None, scale: int = 1
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``augment`` of (N, C, H, W) images, and their (N, 1, H, W) 0/1 float ``masks`` moved by the same geometric
    ops (each op resamples images and masks as one stack). ``scale``: ``x`` is ``scale`` times the size the draws
    are meant for (shifts are drawn in 1/scale of its pixels and scaled up)."""
    c = x.shape[1]

    def stack(t: torch.Tensor) -> torch.Tensor:
        return t if masks is None else torch.cat([t, masks.to(t.dtype)], 1)

    def unstack(t: torch.Tensor) -> torch.Tensor:
        nonlocal masks
        if masks is None:
            return t
        masks = (t[:, c:] >= 0.5).to(masks.dtype)
        return t[:, :c]

    if cfg.rotate or cfg.crop_p or cfg.jitter:
        if norm is None:
            raise ValueError("rotation, random crops and colour jitter need the normalisation (mean, std)")
        mean, std = norm
        pixels = x * std + mean
        if cfg.rotate or cfg.crop_p:
            pixels = unstack(rotate_and_crop(stack(pixels), cfg.rotate, cfg.crop_p, cfg.crop_max, gen))
        if cfg.hflip:
            pixels = unstack(_hflip(stack(pixels), gen))
        if cfg.jitter:
            pixels = color_jitter(pixels, cfg.jitter, gen)
        x = (pixels - mean) / std
    elif cfg.hflip:
        x = unstack(_hflip(stack(x), gen))
    if cfg.crop_pad:
        x = unstack(_shift(stack(x), int(cfg.crop_pad), gen, scale))
    if cfg.color_jitter:
        x = _additive_jitter(x, float(cfg.color_jitter), gen)
    return x, masks


def _hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _shift(x: torch.Tensor, pad: int, gen: torch.Generator, scale: int = 1) -> torch.Tensor:
    """A random crop of the reflect-padded image back to its size: a shift by up to ``pad`` pixels (drawn as
    ``pad``, applied × ``scale``: the same shift of an image ``scale`` times larger)."""
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen) * scale
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen) * scale
    pad *= scale
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = (dy.view(-1, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    x = padded.gather(2, rows)
    cols = (dx.view(-1, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    return x.gather(3, cols)


def _additive_jitter(x: torch.Tensor, jitter: float, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
    brightness = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean + brightness


def rotate_and_crop(pixels: torch.Tensor, degrees: float, crop_p: float, crop_max: float,
                    gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by U[-degrees, degrees] about its centre (black outside), then with probability ``crop_p``
    crop U[0, crop_max] of each side and resize back — one bilinear resampling of the (N, C, H, W) batch."""
    n = pixels.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(degrees)
    cropped = torch.rand(n, generator=gen) < crop_p
    cuts = torch.rand(n, 4, generator=gen) * crop_max * cropped[:, None]  # left, right, top, bottom fractions
    return warp(pixels, angle, cuts)


def warp(pixels: torch.Tensor, angle: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle`` (N,) radians, then crop ``cuts`` (N, 4: left, right, top, bottom fractions) and resize
    back: output coords u ∈ [-1, 1]² → crop box in the rotated image → source coords (aspect-corrected)."""
    n, _, h, w = pixels.shape
    sx, sy = 1 - cuts[:, 0] - cuts[:, 1], 1 - cuts[:, 2] - cuts[:, 3]
    tx, ty = cuts[:, 0] - cuts[:, 1], cuts[:, 2] - cuts[:, 3]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin * h / w], 1), torch.stack([sin * w / h, cos], 1)], 1)  # (N, 2, 2)
    box = torch.zeros(n, 2, 3)
    box[:, 0, 0], box[:, 1, 1], box[:, 0, 2], box[:, 1, 2] = sx, sy, tx, ty
    theta = (rot @ box).to(pixels.dtype)  # p = R (B u + t)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_jitter(pixels: torch.Tensor, jitter: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation of [0, 1] pixels each × U(1 − jitter, 1 + jitter), clamped after each
    (torchvision's ``ColorJitter`` formulas; grey images have no saturation to change)."""
    n, c = pixels.shape[:2]
    factors = 1 + (torch.rand(3, n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
    x = (pixels * factors[0]).clamp(0, 1)  # brightness
    gray = _gray(x)
    x = ((x - gray.mean(dim=(1, 2, 3), keepdim=True)) * factors[1] + gray.mean(dim=(1, 2, 3), keepdim=True))
    x = x.clamp(0, 1)  # contrast: blended with the mean grey level
    if c == 3:
        gray = _gray(x)
        x = ((x - gray) * factors[2] + gray).clamp(0, 1)  # saturation: blended with the grey image
    return x


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)
