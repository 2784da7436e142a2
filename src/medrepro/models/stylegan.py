"""A compact class-conditional StyleGAN2 (Karras et al. 2020) for small medical image sets, CPU-trainable at 32 px.

Generator: mapping network (normalised z ⊕ class embedding → w) and a synthesis network from a learned 4×4 constant
with modulated/demodulated 3×3 convolutions, per-pixel noise and toRGB skip outputs (StyleGAN2 Fig. 7b, "skip").
Discriminator: residual blocks (Fig. 7c, "resnet"), minibatch standard deviation and projection conditioning
(Miyato & Koyama 2018), as in StyleGAN2-ADA's conditional networks. Simplifications: bilinear up / average-pool down
instead of the [1,3,3,1] FIR filters, no style mixing, tanh on the output to bound it to [-1, 1].
VAP-Diffusion's StyleGAN baseline cites StyleGAN3 (its ref. 27); its training code also runs this StyleGAN2 design.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrepro.errors import ParamsError

_LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleGANConfig:
    """Network sizes; ``channels_at(res)`` doubles ``base_channels`` per halving of resolution up to the cap."""

    img_size: int = 32
    channels: int = 3
    num_classes: int = 2
    z_dim: int = 64
    w_dim: int = 64
    mapping_layers: int = 2
    base_channels: int = 16  # channels at img_size
    max_channels: int = 64
    mapping_lr_mul: float = 0.01  # StyleGAN Sec. C.1: 100× lower learning rate in the mapping network
    mbstd_group: int = 4  # StyleGAN2 Appendix B: minibatch stddev over groups of 4
    label_embed_dim: int | None = None  # defaults to z_dim

    def __post_init__(self) -> None:
        n = self.img_size
        if n < 8 or n & (n - 1):
            raise ParamsError(f"gan.model.img_size: {n} is not a power of two ≥ 8")
        for key in ("channels", "num_classes", "z_dim", "w_dim", "mapping_layers", "base_channels", "max_channels"):
            if getattr(self, key) < 1:
                raise ParamsError(f"gan.model.{key}: must be ≥ 1, got {getattr(self, key)}")

    def channels_at(self, res: int) -> int:
        return min(self.base_channels * (self.img_size // res), self.max_channels)

    @property
    def resolutions(self) -> list[int]:
        """8, 16, …, img_size (the 4×4 constant/epilogue comes on top)."""
        return [2**k for k in range(3, int(math.log2(self.img_size)) + 1)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stylegan_profile(profile: str, num_classes: int, channels: int = 3) -> StyleGANConfig:
    """``embedded``: 32 px, 16→64 channels, CPU-trainable. ``paper``: 256 px with StyleGAN2-ADA's auto config (64→512
    channels, 512-d z and w, 2 mapping layers); VAP-Diffusion does not state its StyleGAN settings."""
    if profile == "embedded":
        return StyleGANConfig(img_size=32, channels=channels, num_classes=num_classes)
    if profile == "paper":
        return StyleGANConfig(img_size=256, channels=channels, num_classes=num_classes, z_dim=512, w_dim=512,
                              mapping_layers=2, base_channels=64, max_channels=512)
    raise ParamsError(f"gan.profile: unknown profile {profile!r} (embedded, paper)")


# ---- equalised learning rate layers (ProGAN Sec. 4.1, kept by StyleGAN2) ----


class EqLinear(nn.Module):
    """Linear layer with runtime weight scaling 1/sqrt(fan_in) · lr_mul."""

    def __init__(self, in_f: int, out_f: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_f,), float(bias_init) / lr_mul))
        self.scale, self.lr_mul, self.act = lr_mul / math.sqrt(in_f), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN if self.act else x


class EqConv2d(nn.Module):
    """Plain (unmodulated) conv with equalised learning rate, for the discriminator."""

    def __init__(self, in_c: int, out_c: int, k: int, bias: bool = True, act: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_c, in_c, k, k))
        self.bias = nn.Parameter(torch.zeros(out_c)) if bias else None
        self.scale, self.pad, self.act = 1 / math.sqrt(in_c * k * k), k // 2, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN if self.act else x


# ---- generator ----


class MappingNetwork(nn.Module):
    """z (2nd-moment normalised) ⊕ normalised class embedding → w (StyleGAN Sec. 2; StyleGAN2-ADA conditioning)."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        emb = cfg.label_embed_dim or cfg.z_dim
        self.embed = EqLinear(cfg.num_classes, emb)
        dims = [cfg.z_dim + emb] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.Sequential(*[EqLinear(a, b, lr_mul=cfg.mapping_lr_mul, act=True)
                                      for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.num_classes = cfg.num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = self.embed(F.one_hot(labels, self.num_classes).to(z.dtype))
        return self.layers(torch.cat([_normalize_2nd_moment(z), _normalize_2nd_moment(y)], dim=1))


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class ModulatedConv2d(nn.Module):
    """StyleGAN2 Eq. 1 (modulation w'_ijk = s_i·w_ijk) and Eq. 3 (demodulation by sqrt(Σ w'² + ε))."""

    def __init__(self, in_c: int, out_c: int, k: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_c, in_c, k, k))
        self.affine = EqLinear(w_dim, in_c, bias_init=1.0)  # style s from w, bias 1 (StyleGAN2 Appendix B)
        self.scale, self.pad, self.demodulate = 1 / math.sqrt(in_c * k * k), k // 2, demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (N, in_c)
        weight = self.weight * self.scale
        # Eq. 1 applied to the input, conv with the shared weight, Eq. 3 applied to the output: the same result as
        # convolving with per-sample weights (StyleGAN2 Sec. 2.2, the non-fused path), but one batched conv
        x = F.conv2d(x * s[:, :, None, None], weight, padding=self.pad)
        if self.demodulate:
            d = (s.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # (N, out_c)
            x = x * d[:, :, None, None]
        return x


class StyledLayer(nn.Module):
    """Modulated conv → per-pixel noise (StyleGAN Sec. 3.2, learned per-layer strength) → bias → lrelu."""

    def __init__(self, in_c: int, out_c: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_c, out_c, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_c))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_gen: torch.Generator | None, use_noise: bool):
        x = self.conv(x, w)
        if use_noise:
            noise = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=noise_gen, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * _LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1×1 conv without demodulation (StyleGAN2 Fig. 7b tRGB)."""

    def __init__(self, in_c: int, out_c: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_c, out_c, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_c))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    """Upsample ×2 → two styled 3×3 convs → toRGB added to the upsampled skip image (StyleGAN2 Fig. 7b)."""

    def __init__(self, in_c: int, out_c: int, cfg: StyleGANConfig):
        super().__init__()
        self.conv0 = StyledLayer(in_c, out_c, cfg.w_dim)
        self.conv1 = StyledLayer(out_c, out_c, cfg.w_dim)
        self.to_rgb = ToRGB(out_c, cfg.channels, cfg.w_dim)

    def forward(self, x, img, w, noise_gen, use_noise):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv1(self.conv0(x, w, noise_gen, use_noise), w, noise_gen, use_noise)
        img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, img + self.to_rgb(x, w)


class Generator(nn.Module):
    """G(z, labels) → images in [-1, 1], shape (N, channels, img_size, img_size)."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        c4 = cfg.channels_at(4)
        self.const = nn.Parameter(torch.randn(c4, 4, 4))  # learned 4×4 constant input (StyleGAN Sec. 2)
        self.conv4 = StyledLayer(c4, c4, cfg.w_dim)
        self.rgb4 = ToRGB(c4, cfg.channels, cfg.w_dim)
        self.blocks = nn.ModuleList(SynthesisBlock(cfg.channels_at(r // 2), cfg.channels_at(r), cfg)
                                    for r in cfg.resolutions)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, truncation: float = 1.0,
                w_avg: torch.Tensor | None = None, noise_gen: torch.Generator | None = None,
                use_noise: bool = True) -> torch.Tensor:
        """``truncation`` < 1 pulls w towards ``w_avg`` (StyleGAN Sec. 3.1 truncation trick; per class if given)."""
        w = self.mapping(z, labels)
        if truncation != 1.0:
            if w_avg is None:
                raise ValueError("truncation needs w_avg (see medrepro.vap.gan.sample_gan)")
            w = w_avg + truncation * (w - w_avg)
        return self.synthesis(w, noise_gen, use_noise)

    def synthesis(self, w: torch.Tensor, noise_gen: torch.Generator | None = None,
                  use_noise: bool = True) -> torch.Tensor:
        x = self.const[None].expand(w.shape[0], -1, -1, -1)
        x = self.conv4(x, w, noise_gen, use_noise)
        img = self.rgb4(x, w)
        for block in self.blocks:
            x, img = block(x, img, w, noise_gen, use_noise)
        return torch.tanh(img)  # bound to [-1, 1]; StyleGAN2 leaves the output linear


# ---- discriminator ----


class DiscriminatorBlock(nn.Module):
    """conv3×3 → conv3×3 → avg-pool, plus a 1×1 downsampled skip, summed and scaled by 1/√2 (StyleGAN2 Fig. 7c)."""

    def __init__(self, in_c: int, out_c: int):
        super().__init__()
        self.conv0 = EqConv2d(in_c, in_c, 3)
        self.conv1 = EqConv2d(in_c, out_c, 3)
        self.skip = EqConv2d(in_c, out_c, 1, bias=False, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.conv1(self.conv0(x)), 2)
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class Discriminator(nn.Module):
    """D(x, labels) → logits (N,): fromRGB, residual blocks to 4×4, mbstd, conv, fc, projection on the class."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        self.from_rgb = EqConv2d(cfg.channels, cfg.channels_at(cfg.img_size), 1)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(cfg.channels_at(r), cfg.channels_at(r // 2))
                                      for r in reversed(cfg.resolutions)])
        c4 = cfg.channels_at(4)
        self.conv = EqConv2d(c4 + 1, c4, 3)
        self.fc = EqLinear(c4 * 16, c4, act=True)
        self.out = EqLinear(c4, 1)
        self.embed = EqLinear(cfg.num_classes, c4)  # projection discriminator: logit += <embed(y), φ(x)> / √dim

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.from_rgb(x))
        h = self.conv(_minibatch_stddev(h, self.cfg.mbstd_group))
        h = self.fc(h.flatten(1))
        y = self.embed(F.one_hot(labels, self.cfg.num_classes).to(h.dtype))
        return self.out(h).squeeze(1) + (h * y).sum(dim=1) / math.sqrt(h.shape[1])


def _minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the mean std over groups of samples as one feature map (ProGAN Sec. 3, StyleGAN2 Appendix B)."""
    n, c, h, w = x.shape
    g = next(k for k in range(min(group, n), 0, -1) if n % k == 0)
    y = x.reshape(g, n // g, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
    y = y.reshape(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y], dim=1)
