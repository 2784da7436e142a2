"""timm ViT image towers for EI (Sec. 3.1–3.2, Algorithm 1): building, weight loading, token-level access.

``build_vit(cfg)`` creates a timm ``VisionTransformer`` (CLIP ViT-B/16, DINOv2 ViT-B/14 with or without
registers, or the small randomly initialised ViT of the embedded default) and loads its weights from a local
file or the hub, failing with ``WeightsError`` rather than falling back to a random init. ``ViTTower`` wraps
such a model and exposes the sequence entering the first block, the blocks with [INT] tokens appended before a
chosen layer, and the [CLS] of any layer, using only timm's public submodules (no monkey-patching).

Config keys (a ``Mapping``): ``arch`` (timm name, tag allowed), ``img_size`` (int, optional;
``kwargs.img_size`` is also read), ``pretrained`` (bool, default false), ``weights`` (None | local file |
``"hub"``; None with ``pretrained`` means the hub), ``kwargs`` (extra timm kwargs), ``num_classes`` (int,
default 0 = feature extractor), ``normalize`` (``"clip"``, the default, | ``"timm"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import timm
import torch
import torch.nn.functional as F
from timm.models import get_pretrained_cfg
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from medrepro.errors import ParamsError, WeightsError
from medrepro.models.weights import Convert, load_pretrained

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TowerSpec",
    "ViTTower",
    "build_vit",
    "input_size_for",
    "normalization",
    "pad_inputs",
    "pad_to_multiple",
    "tower_spec",
]

# OpenAI CLIP statistics (timm's OPENAI_CLIP_MEAN/STD); the authors normalise DINOv2 with them too
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
_CLIP_REFERENCE_ARCH = "vit_base_patch16_clip_224.openai"
_RESERVED_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "features_only")


@dataclass(frozen=True)
class TowerSpec:
    """A validated image-tower config."""

    arch: str
    img_size: int | None
    pretrained: bool
    weights: str | None
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: str = "clip"


def tower_spec(cfg: Mapping[str, Any]) -> TowerSpec:
    """Validate ``cfg`` (see module docstring); errors name the offending key."""
    arch = cfg.get("arch")
    if not isinstance(arch, str) or not arch:
        raise ParamsError(f"image tower: 'arch' must be a timm model name, got {arch!r}")
    if not timm.is_model(arch):
        raise ParamsError(f"image tower: unknown timm model arch={arch!r}")
    kwargs = cfg.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ParamsError(f"image tower {arch}: 'kwargs' must be a mapping, got {type(kwargs).__name__}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # null: the arch's own value
    for key in _RESERVED_KWARGS:
        if key in kwargs:
            raise ParamsError(f"image tower {arch}: kwargs.{key} is not allowed; use the top-level keys")
    img_size = cfg.get("img_size")
    kw_img = kwargs.pop("img_size", None)
    if img_size is not None and kw_img is not None and img_size != kw_img:
        raise ParamsError(f"image tower {arch}: img_size={img_size} disagrees with kwargs.img_size={kw_img}")
    img_size = img_size if img_size is not None else kw_img
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1):
        raise ParamsError(f"image tower {arch}: 'img_size' must be a positive int, got {img_size!r}")
    num_classes = cfg.get("num_classes", 0)
    kw_classes = kwargs.pop("num_classes", None)
    if kw_classes is not None and kw_classes != num_classes:
        raise ParamsError(f"image tower {arch}: num_classes={num_classes} disagrees with kwargs.num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ParamsError(f"image tower {arch}: 'num_classes' must be an int >= 0, got {num_classes!r}")
    pretrained = cfg.get("pretrained", False)
    if not isinstance(pretrained, bool):
        raise ParamsError(f"image tower {arch}: 'pretrained' must be true or false, got {pretrained!r}")
    weights = cfg.get("weights")
    if weights is not None and not isinstance(weights, str | Path):
        raise ParamsError(f"image tower {arch}: 'weights' must be null, a path or 'hub', got {weights!r}")
    weights = None if weights is None else str(weights)
    if weights is not None and not pretrained:
        raise ParamsError(f"image tower {arch}: weights={weights!r} is set but pretrained is false")
    arch_patch, asked = _arch_patch(arch), kwargs.get("patch_size")
    if pretrained and weights is None and arch_patch is not None and asked is not None \
            and _square(arch, asked) != arch_patch:  # hub weights have the arch's patch; a file is checked on load
        raise ParamsError(f"image tower {arch}: kwargs.patch_size={asked} differs from the pretrained weights' patch "
                          f"{arch_patch}; a pretrained patch embedding is never resized (set kwargs.patch_size to "
                          f"{arch_patch} or null)")
    normalize = cfg.get("normalize", "clip")
    if normalize not in ("clip", "timm"):
        raise ParamsError(f"image tower {arch}: 'normalize' must be 'clip' or 'timm', got {normalize!r}")
    return TowerSpec(arch, img_size, pretrained, weights, num_classes, kwargs, normalize)


def _arch_patch(arch: str) -> int | None:
    """The patch size a timm arch name states (``..._patch14_...``), if any."""
    m = re.search(r"patch(\d+)", arch)
    return int(m.group(1)) if m else None


def _square(arch: str, ps: Any) -> int:
    if isinstance(ps, Sequence) and not isinstance(ps, str):
        if len(ps) != 2 or ps[0] != ps[1]:
            raise ParamsError(f"image tower {arch}: only square patches are supported, got {ps!r}")
        ps = ps[0]
    return int(ps)


def _patch_size(spec: TowerSpec) -> int:
    """Patch size from ``kwargs.patch_size`` or the timm arch name (``..._patch14_...``)."""
    ps = spec.kwargs.get("patch_size")
    if ps is not None:
        return _square(spec.arch, ps)
    arch_patch = _arch_patch(spec.arch)
    if arch_patch is None:
        raise ParamsError(f"image tower {spec.arch}: cannot tell the patch size; set kwargs.patch_size")
    return arch_patch


def input_size_for(cfg: Mapping[str, Any] | TowerSpec) -> int:
    """Side length the tower sees: ``img_size`` zero-padded up to a multiple of the patch size.

    DINOv2 (patch 14) at 512 → 518 and 256 → 266 as in the authors' code; CLIP (patch 16) at 448/512/256 is
    unchanged. Without ``img_size`` the pretrained config's input size (else 224) is used.
    """
    spec = cfg if isinstance(cfg, TowerSpec) else tower_spec(cfg)
    size = spec.img_size
    if size is None:
        pcfg = get_pretrained_cfg(spec.arch)
        size = int(pcfg.input_size[-1]) if pcfg is not None and pcfg.input_size else 224
    patch = _patch_size(spec)
    return math.ceil(size / patch) * patch


def pad_to_multiple(x: Tensor, patch: int | Sequence[int]) -> Tensor:
    """Zero-pad (…, H, W) right/bottom so that H and W are multiples of ``patch``; no copy if they are."""
    ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % ph, (-w) % pw
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def normalization(cfg: Mapping[str, Any] | TowerSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input (mean, std): CLIP statistics for every tower by default (the authors use them for DINOv2 too).

    ``normalize: timm`` returns the arch's own pretrained-cfg statistics instead (ImageNet for DINOv2).
    """
    spec = cfg if isinstance(cfg, TowerSpec) else tower_spec(cfg)
    arch = spec.arch if spec.normalize == "timm" else _CLIP_REFERENCE_ARCH
    pcfg = get_pretrained_cfg(arch)
    if pcfg is not None and pcfg.mean and pcfg.std:
        return tuple(float(v) for v in pcfg.mean), tuple(float(v) for v in pcfg.std)
    return CLIP_MEAN, CLIP_STD


def _pad_input(patch_embed: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of a ViT's patch embedding: zero-pad the image right/bottom to a multiple of the patch."""
    return (pad_to_multiple(args[0], patch_embed.patch_size), *args[1:])


def pad_inputs(vit: VisionTransformer) -> VisionTransformer:
    """Make ``vit`` take any H/W by zero-padding to a multiple of its patch (the authors' DINOv2 at 512/256 px →
    518/266), in every path that embeds patches (``forward``, ``forward_features``, ``ViTTower``). Idempotent."""
    hooks = vit.patch_embed._forward_pre_hooks.values()
    if _pad_input not in hooks:
        vit.patch_embed.register_forward_pre_hook(_pad_input)
    return vit


def _model_kwargs(spec: TowerSpec) -> dict[str, Any]:
    kw = dict(spec.kwargs, num_classes=spec.num_classes)
    if spec.img_size is not None:
        kw["img_size"] = input_size_for(spec)  # Sec. 4.1 resolutions; pos-embed resampled by timm on load
    return kw


def _create(spec: TowerSpec, **extra: Any) -> VisionTransformer:
    model = timm.create_model(spec.arch, **_model_kwargs(spec), **extra)
    if not isinstance(model, VisionTransformer):
        raise ParamsError(f"image tower {spec.arch}: timm built a {type(model).__name__}, not a ViT")
    return pad_inputs(model)


#: where the patch embedding's kernel sits: timm / DINOv2 originals, OpenAI CLIP originals
_PATCH_KEYS = ("patch_embed.proj.weight", "visual.conv1.weight", "conv1.weight")


def _state_patch(raw: Mapping[str, Tensor]) -> int | None:
    """Patch size of a state dict's patch embedding (its kernel's width), if it has one."""
    for key in _PATCH_KEYS:
        w = raw.get(key)
        if isinstance(w, Tensor) and w.ndim == 4:
            return int(w.shape[-1])
    return None


def _convert(spec: TowerSpec) -> Convert:
    """Raw state dict → what timm loads into this model (key renames, pos-embed resampling; timm's own filter)."""

    def convert(raw: dict[str, Tensor]) -> dict[str, Tensor]:
        file_patch, patch = _state_patch(raw), _patch_size(spec)
        if file_patch is not None and file_patch != patch:  # timm would resample the kernel: refuse instead
            raise WeightsError(f"image tower {spec.arch}: the weights' patch embedding is {file_patch} px, the "
                               f"model's {patch} px; a pretrained patch embedding is never resized (set "
                               f"kwargs.patch_size to {file_patch}, or null with an arch of that patch)")
        skeleton = _create(spec, pretrained=False, device="meta")  # shapes only, no memory
        return checkpoint_filter_fn(dict(raw), skeleton)

    return convert


def build_vit(cfg: Mapping[str, Any]) -> VisionTransformer:
    """Create the timm ViT described by ``cfg``; with ``pretrained`` the weights are loaded and checked.

    A local file goes through ``pretrained_cfg_overlay=dict(file=…, num_classes=<file's head>)`` so timm
    converts it (CLIP/DINOv2 originals, pos-embed resampled to ``img_size``); its head is kept when
    ``num_classes`` matches, else a fresh head is initialised. Afterwards every tensor is compared with the
    file (``medrepro.models.weights``). Any failure → ``WeightsError``.
    """
    spec = tower_spec(cfg)
    if not spec.pretrained:
        return _create(spec, pretrained=False)
    model = load_pretrained(partial(_create, spec), spec.arch, spec.num_classes, spec.weights, convert=_convert(spec))
    return cast(VisionTransformer, model)  # _create checked the type


class ViTTower(nn.Module):
    """A timm ``VisionTransformer`` with EI's token-level hooks, built from its public submodules.

    Token layout entering block 0: ``[CLS][registers…][patches…]`` (``num_prefix_tokens`` = CLS + registers);
    [INT] tokens go after all of them. Inputs whose H/W are not multiples of the patch size are zero-padded
    right/bottom by the patch embedding (``pad_inputs``), as the authors do for DINOv2 at 512/256 px.

    Volumes (MRNet): reshape a stack of slices to ``(B*S, C, H, W)`` before calling, repeat each sample's
    [INT] tokens per slice (``extra.repeat_interleave(S, 0)``) and reshape the ``(B*S, D)`` output back to
    ``(B, S, D)``; nothing here mixes samples of a batch.
    """

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise TypeError(f"ViTTower needs a timm VisionTransformer, got {type(vit).__name__}")
        self.vit = pad_inputs(vit)

    @property
    def embed_dim(self) -> int:
        """Token width D."""
        return int(self.vit.embed_dim)

    @property
    def num_prefix_tokens(self) -> int:
        """[CLS] plus register tokens in front of the patch tokens."""
        return int(self.vit.num_prefix_tokens)

    @property
    def depth(self) -> int:
        """Number of transformer blocks L."""
        return len(self.vit.blocks)

    @property
    def patch_size(self) -> tuple[int, int]:
        """Patch size (h, w) of the patch embedding."""
        ph, pw = self.vit.patch_embed.patch_size
        return int(ph), int(pw)

    def tokens(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, N, D), the sequence entering block 0: patches, pos-embed, CLS/regs, norm_pre."""
        v = self.vit
        x = v.patch_embed(x)  # Sec. 3.1: Conv(x) → patch tokens Z^0 (input zero-padded to k·patch first)
        x = v._pos_embed(x)
        x = v.patch_drop(x)
        return v.norm_pre(x)

    def _block(self, blk: nn.Module, x: Tensor) -> Tensor:
        if self.vit.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def forward_blocks(
        self,
        tokens: Tensor,
        extra: Tensor | None = None,
        insert_at: int = 0,
        cls_at: int | None = None,
        extra_scale: str = "none",
    ) -> tuple[Tensor, Tensor | None]:
        """Run the blocks on ``tokens`` (B, N, D), optionally with ``extra`` (B, k, D) tokens.

        ``extra`` is appended after all N tokens right before block ``insert_at`` (0 = the first block)
        without position embedding, and removed after the last block. ``extra_scale="match"`` rescales each extra
        token to the mean norm of the tokens it joins (per sample); ``"none"`` leaves it as given. Returns the final
        block output (B, N, D), not yet passed through ``norm``, and the [CLS] output (B, D) of layer ``cls_at``
        (1-based; 0 = the input of block 0; None = the last layer), also un-normed; None without a class token.
        """
        depth = self.depth
        if not 0 <= insert_at < depth:
            raise ValueError(f"insert_at must be in 0..{depth - 1}, got {insert_at}")
        layer = depth if cls_at is None else cls_at
        if not 0 <= layer <= depth:
            raise ValueError(f"cls_at must be in 0..{depth} (1-based layer), got {cls_at}")
        has_cls = bool(self.vit.has_class_token)
        if cls_at is not None and not has_cls:
            raise ValueError("cls_at needs a model with a class token")
        n = tokens.shape[1]
        if extra is not None:
            if extra.ndim != 3 or extra.shape[0] != tokens.shape[0] or extra.shape[2] != tokens.shape[2]:
                b, d = tokens.shape[0], tokens.shape[2]
                raise ValueError(
                    f"extra tokens must be (B={b}, k, D={d}), got {tuple(extra.shape)}"
                    " (volumes: repeat [INT] per slice)"
                )
            extra = extra.to(dtype=tokens.dtype)
        x = tokens
        cls = x[:, 0] if layer == 0 else None
        blocks = self.vit.blocks
        prompted = hasattr(blocks, "insert_prompts")  # VPT (adapters.PromptedBlocks): prompts after the prefix
        for i, blk in enumerate(blocks):
            if extra is not None and i == insert_at:
                if extra_scale == "match":  # ours (ei.int_scale): [INT] at the scale of the tokens it joins
                    scale = x.norm(dim=-1).mean(1, keepdim=True) / extra.norm(dim=-1).clamp_min(1e-6)
                    extra = extra * scale[..., None]
                x = torch.cat([x, extra], dim=1)  # Sec. 3.2: [INT] tokens appended before layer `insert_at`
            if prompted:
                x = blocks.insert_prompts(x, i)
            x = self._block(blk, x)
            if i + 1 == layer:
                cls = x[:, 0]  # Sec. 3.1: Z^l[0], the [CLS] of layer l
        if prompted:
            x = blocks.remove_prompts(x)
        x = x[:, :n]  # Sec. 3.2: drop [INT] again so pooling sees the original sequence
        return x, (cls if has_cls else None)

    def features(self, x: Tensor, extra: Tensor | None = None, insert_at: int = 0) -> Tensor:
        """(B, D) = timm's ``forward_head(pre_logits=True)``: the final normed [CLS] for CLIP/DINOv2."""
        final, _ = self.forward_blocks(self.tokens(x), extra, insert_at)
        # Eq. 2: CLS^_t = φ_p(Z^_t^0, L)[0]
        return self.vit.forward_head(self.vit.norm(final), pre_logits=True)

    def forward(self, x: Tensor, extra: Tensor | None = None, insert_at: int = 0) -> Tensor:
        """Logits of timm's head (identity when ``num_classes`` is 0)."""
        return self.vit.head(self.features(x, extra, insert_at))
