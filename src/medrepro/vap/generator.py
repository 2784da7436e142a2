"""A generator = U-ViT denoiser + how its images map to its space (pixels or SD-VAE latents) + its conditions.

Variants (VAP-Diffusion Table 2): ``class`` — U-ViT conditioned on the class only (the paper's "w/o VAPS"; PCM is
inactive without VAPS, as the paper says); ``vap_nopcm`` — class + t_mix token states; ``vap`` — class + t_mix +
the prototype condition mechanism (Sec. 2.4). ``vap_shuffled`` is a mutation, not a paper variant: ``vap`` trained
with each image's t_mix swapped for that of another image of its class, so captions carry the class and nothing
about their image (what caption conditioning adds beyond the class: the `mechanisms` experiment).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medrepro.config import DiffusionConfig, TextConfig, VAEConfig
from medrepro.errors import ParamsError
from medrepro.models.uvit import UViT, UViTConfig

#: variant → (text condition, PCM)
VARIANTS: dict[str, tuple[bool, bool]] = {"class": (False, False), "vap_nopcm": (True, False), "vap": (True, True),
                                          "vap_shuffled": (True, True)}
#: variants trained on captions permuted within each class (``shuffle_within_class``)
SHUFFLED = frozenset({"vap_shuffled"})
#: SD VAE: 8× downsampling, 4 latent channels
LATENT_DOWNSAMPLE = 8
LATENT_CHANNELS = 4


def variant_flags(variant: str) -> tuple[bool, bool]:
    if variant not in VARIANTS:
        raise ParamsError(f"unknown diffusion variant {variant!r} (one of {', '.join(VARIANTS)})")
    return VARIANTS[variant]


def shuffle_within_class(captions: list[str], labels: np.ndarray, seed: int) -> list[str]:
    """``captions`` permuted at random among the images of each class (seeded): every image gets a caption of its
    own class, of another image except by chance (probability 1/n of the class's n images)."""
    rng = np.random.default_rng([seed, 7])
    out = list(captions)
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        for dst, src in zip(rows, rng.permutation(rows), strict=True):
            out[dst] = captions[src]
    return out


@dataclass(frozen=True)
class Space:
    """Where diffusion runs: ``pixel`` (channels of the images) or ``latent`` (SD-VAE latents)."""

    kind: str
    image_size: int
    image_channels: int

    @property
    def channels(self) -> int:
        return self.image_channels if self.kind == "pixel" else LATENT_CHANNELS

    @property
    def size(self) -> int:
        return self.image_size if self.kind == "pixel" else self.image_size // LATENT_DOWNSAMPLE


def uvit_config(cfg: DiffusionConfig, variant: str, num_classes: int, space: Space,
                context_dim: int | None) -> UViTConfig:
    """The U-ViT of ``variant`` at the profile's size (upstream: patch 2, dim 512, depth 16 on 4×32×32 latents);
    the class and vap_nopcm variants always have a label token, vap one only with ``uvit.label_token``."""
    text, pcm = variant_flags(variant)
    u = cfg.uvit
    return UViTConfig(img_size=space.size, in_chans=space.channels, patch_size=u.patch_size, dim=u.dim,
                      depth=u.depth, heads=u.heads, mlp_ratio=u.mlp_ratio, qkv_bias=u.qkv_bias,
                      num_classes=num_classes, label_token=u.label_token or not pcm,  # VAP Sec. 2.4: PCM alone
                      context_dim=context_dim if text else None,
                      context_len=cfg.text.context_len if text else 0, pcm=pcm,
                      pcm_tokens=u.pcm_tokens if pcm else None)


def describe(cfg: DiffusionConfig, variant: str, uvit: UViTConfig, space: Space, classes: list[str],
             **facts: Any) -> dict[str, Any]:
    """What rebuilds and samples a trained generator (saved beside its weights)."""
    return {"builder": "uvit", "variant": variant, "uvit": uvit.as_dict(), "space": vars(space),
            "vae": vars(cfg.vae) if space.kind == "latent" else None,
            "text": vars(cfg.text) if uvit.context_dim else None, "noise": vars(cfg.noise),
            "p_uncond": cfg.p_uncond, "pcm_alpha": cfg.pcm_alpha, "train": vars(cfg.train), "classes": classes,
            **facts}


def build_uvit(desc: Mapping[str, Any]) -> UViT:
    return UViT(UViTConfig(**desc["uvit"]))


def space_of(desc: Mapping[str, Any]) -> Space:
    return Space(**desc["space"])


def vae_config(desc: Mapping[str, Any]) -> VAEConfig | None:
    return VAEConfig(**desc["vae"]) if desc.get("vae") else None


def text_config(desc: Mapping[str, Any]) -> TextConfig | None:
    return TextConfig(**desc["text"]) if desc.get("text") else None


def to_model_range(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W, C) → float (N, C, size, size) in [-1, 1] (resized once when the sizes differ)."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def fit_channels(x: torch.Tensor, channels: int, dim: int) -> torch.Tensor:
    """``x`` with ``channels`` along ``dim``: many → 1 by the mean (as float), 1 → many by repetition."""
    if x.shape[dim] == channels:
        return x
    if channels == 1:
        return x.float().mean(dim, keepdim=True)
    if x.shape[dim] == 1:
        return x.repeat_interleave(channels, dim)
    raise ValueError(f"cannot map {x.shape[dim]} image channels to {channels}")


def to_uint8(x: torch.Tensor, channels: int) -> torch.Tensor:
    """float (N, C', H, W) in [-1, 1] → uint8 (N, H, W, channels) (``fit_channels``)."""
    x = fit_channels(x, channels, 1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
