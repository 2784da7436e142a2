"""U-ViT denoiser (Bao et al. 2023, "All are worth words") with VAP-Diffusion's prototype condition mechanism.

Every input is a token: the time token (sinusoidal timestep embedding, no MLP, as upstream's configs), an optional
label token (``nn.Embedding(num_classes + 1, dim)``; index ``num_classes`` is the null class for classifier-free
guidance), optional text-context tokens (``Linear(context_dim, dim)``) and the patch tokens (conv patch embedding),
plus a learned position embedding. ``depth`` follows U-ViT's convention: ``depth // 2`` in-blocks, one mid block and
``depth // 2`` out-blocks, so ``2 * (depth // 2) + 1`` blocks in all (U-ViT-S "depth 13" = 6 + 1 + 6; the VAP-Diffusion
config's depth 16 = 8 + 1 + 8). Out-block ``i`` takes a long skip from in-block ``depth // 2 - 1 - i`` (concat, then
``Linear(2 * dim, dim)``). Then final norm, ``Linear(dim, patch_size² · in_chans)``, unpatchify and a 3×3 conv.

PCM (VAP-Diffusion Sec. 2.4) sits between the mid block and the out-blocks; what upstream does and what we chose:

- prototypes: ``nn.Embedding(num_classes + 1, pcm_tokens · dim)``, ``pcm_tokens = 2 · num_patches`` by default.
  Upstream's ``num_classes`` counts the null class, so it has a prototype of its own; so does ours: null-class rows
  (label ``num_classes``, or ``labels=None``) use the null prototype, trained by the unconditional drop-out.
- reconstruction: ``q = Linear(F_e)`` over all tokens, ``k, v = Linear(prototypes)``, multi-head attention → recon.
  Upstream's loss is ``0.5 · MSE(recon, q)``, the target not detached (gradient reaches the backbone through both
  sides). ``pcm_target="query"`` (default) does that; ``"features"`` uses ``F_e`` itself (the paper's wording),
  also not detached, also with 0.5. The mean runs over real tokens only (padded context tokens are left out).
- injection: tokens cross-attend to the prototypes (no pre-norm, as upstream) through a zero-initialised linear
  residual, then a pre-norm MLP through a zero-initialised linear residual. The paper also names a self-attention
  layer; upstream's PCM block has none (the out-blocks' self-attention follows), so ``pcm_self_attn`` defaults to
  False; True adds a pre-norm self-attention residual with a zero-initialised output after the cross-attention.
- With every injection zero-initialised, a fresh ``pcm=True`` model gives exactly the eps of the same weights without
  PCM. Upstream's PCM variant drops the label token (class only through the prototypes): ``label_token=False``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.errors import ParamsError

__all__ = ["UViT", "UViTConfig", "timestep_embedding"]

PCM_TARGETS = ("query", "features")


@dataclass(frozen=True)
class UViTConfig:
    """U-ViT architecture; ``depth`` as U-ViT's (``depth // 2`` in-blocks, a mid block, ``depth // 2`` out-blocks)."""

    img_size: int
    in_chans: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    num_classes: int = 0  # real classes; index num_classes is the null class; 0 = no label token, no classes
    label_token: bool = True  # with num_classes > 0: a label token (upstream's PCM variant has none)
    context_dim: int | None = None  # text token-state width; None = no text context
    context_len: int = 0  # context tokens (exactly this many per sample)
    pcm: bool = False  # VAP-Diffusion Sec. 2.4 prototype condition mechanism
    pcm_tokens: int | None = None  # prototype tokens per class; None = 2 * num_patches (as upstream)
    pcm_target: str = "query"  # L_recon target: "query" = Linear(F_e) (upstream), "features" = F_e (paper text)
    pcm_self_attn: bool = False  # a zero-initialised self-attention after the prototype cross-attention

    def __post_init__(self) -> None:
        def bad(msg: str) -> ParamsError:
            return ParamsError(f"U-ViT config: {msg}")

        for name in ("img_size", "in_chans", "patch_size", "dim", "depth", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad(f"{name} must be a positive int, got {value!r}")
        if self.img_size % self.patch_size:
            raise bad(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")
        if self.dim % self.heads:
            raise bad(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.num_classes < 0:
            raise bad(f"num_classes must be >= 0, got {self.num_classes}")
        if (self.context_dim is None) != (self.context_len == 0):
            raise bad(f"context_dim={self.context_dim} and context_len={self.context_len}: set both or neither")
        if self.context_dim is not None and (self.context_dim < 1 or self.context_len < 1):
            raise bad("context_dim and context_len must be positive")
        if self.pcm and self.num_classes < 1:
            raise bad("pcm needs num_classes >= 1 (one prototype per class)")
        if self.pcm_tokens is not None and self.pcm_tokens < 1:
            raise bad(f"pcm_tokens must be positive, got {self.pcm_tokens}")
        if self.pcm_target not in PCM_TARGETS:
            raise bad(f"pcm_target must be one of {PCM_TARGETS}, got {self.pcm_target!r}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def as_dict(self) -> dict:
        """The fields as a plain dict (for checkpoints and params)."""
        return dataclasses.asdict(self)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos, sin]`` of (possibly fractional) timesteps, as U-ViT; (N,) → (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, H·D) → (B, H, L, D)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, H, L, D) → (B, L, H·D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _zero_linear(dim: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(dim, dim, bias=bias)
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class Attention(nn.Module):
    """Multi-head self-attention; ``key_mask`` (B, L) True = a token others may attend to."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` (queries) over ``memory`` (keys and values)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        q, k, v = (_heads(f(t), self.heads) for f, t in ((self.q, x), (self.k, memory), (self.v, memory)))
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


def _mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block; an out-block first fuses its long skip: ``Linear(2·dim, dim)(cat[x, skip])``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool = False) -> None:
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio)

    def forward(self, x: Tensor, skip: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("an out-block needs its long skip")
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class PrototypeCondition(nn.Module):
    """VAP-Diffusion Sec. 2.4, PCM: class prototypes reconstruct F_e (L_recon) and are injected into the tokens."""

    def __init__(self, cfg: UViTConfig) -> None:
        super().__init__()
        self.heads, self.dim, self.target = cfg.heads, cfg.dim, cfg.pcm_target
        self.tokens = cfg.pcm_tokens or 2 * cfg.num_patches
        self.prototypes = nn.Embedding(cfg.num_classes + 1, self.tokens * cfg.dim)  # the last row: null class
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.cross = CrossAttention(cfg.dim, cfg.heads, cfg.qkv_bias)
        self.cross_out = _zero_linear(cfg.dim, cfg.qkv_bias)
        if cfg.pcm_self_attn:
            self.self_norm = nn.LayerNorm(cfg.dim)
            self.self_attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias)
            self.self_out = _zero_linear(cfg.dim, cfg.qkv_bias)
        else:
            self.self_attn = None
        self.mlp_norm = nn.LayerNorm(cfg.dim)
        self.mlp = _mlp(cfg.dim, cfg.mlp_ratio)
        self.mlp_out = _zero_linear(cfg.dim, cfg.qkv_bias)

    def zero_init(self) -> None:
        """Zero the injection outputs (after a model-wide init)."""
        for layer in (self.cross_out, self.mlp_out, getattr(self, "self_out", None)):
            if layer is not None:
                for p in layer.parameters():
                    nn.init.zeros_(p)

    def recon_loss(self, feats: Tensor, protos: Tensor, token_mask: Tensor | None) -> Tensor:
        """VAP-Diffusion Sec. 2.4, L_recon = 0.5 · MSE(attn(q(F_e), k(p_c), v(p_c)), target) over real tokens."""
        query = self.q(feats)
        k, v = _heads(self.k(protos), self.heads), _heads(self.v(protos), self.heads)
        recon = _merge(F.scaled_dot_product_attention(_heads(query, self.heads), k, v))
        target = query if self.target == "query" else feats
        err = (recon - target).pow(2).mean(dim=-1)
        if token_mask is None:
            return 0.5 * err.mean()
        w = token_mask.to(err.dtype)
        return 0.5 * (err * w).sum() / w.sum()

    def forward(self, x: Tensor, labels: Tensor, token_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        protos = self.prototypes(labels).view(x.shape[0], self.tokens, self.dim)
        loss = self.recon_loss(x, protos, token_mask)
        x = x + self.cross_out(self.cross(x, protos))
        if self.self_attn is not None:
            x = x + self.self_out(self.self_attn(self.self_norm(x), token_mask))
        x = x + self.mlp_out(self.mlp(self.mlp_norm(x)))
        return x, loss


class UViT(nn.Module):
    """U-ViT ε-network; ``forward`` returns (eps with x's shape, L_recon or None when PCM is off)."""

    def __init__(self, cfg: UViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.dim, cfg.patch_size, stride=cfg.patch_size)
        self.label_emb = nn.Embedding(cfg.num_classes + 1, cfg.dim) if self._has_label_token else None
        self.context_embed = nn.Linear(cfg.context_dim, cfg.dim) if cfg.context_dim is not None else None
        self.extras = 1 + int(self._has_label_token) + cfg.context_len
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + cfg.num_patches, cfg.dim))
        block = dict(dim=cfg.dim, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias)
        self.in_blocks = nn.ModuleList(Block(**block) for _ in range(cfg.depth // 2))
        self.mid_block = Block(**block)
        self.out_blocks = nn.ModuleList(Block(**block, skip=True) for _ in range(cfg.depth // 2))
        self.pcm = PrototypeCondition(cfg) if cfg.pcm else None
        self.norm = nn.LayerNorm(cfg.dim)
        self.decoder_pred = nn.Linear(cfg.dim, cfg.patch_size**2 * cfg.in_chans)
        self.final_layer = nn.Conv2d(cfg.in_chans, cfg.in_chans, 3, padding=1)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)
        if self.pcm is not None:
            self.pcm.zero_init()

    @property
    def _has_label_token(self) -> bool:
        return self.cfg.num_classes > 0 and self.cfg.label_token

    @property
    def null_class(self) -> int:
        """The label of the unconditional (null) class: ``num_classes``."""
        return self.cfg.num_classes

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # as U-ViT: truncated-normal linear weights, zero biases, unit LayerNorms
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def _labels(self, labels: Tensor | None, b: int, device: torch.device) -> Tensor | None:
        if self.cfg.num_classes == 0:
            if labels is not None:
                raise ValueError("this U-ViT has no classes (num_classes=0) but labels were given")
            return None
        if labels is None:
            return torch.full((b,), self.null_class, dtype=torch.long, device=device)
        if labels.shape != (b,):
            raise ValueError(f"labels must have shape ({b},), got {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() > self.null_class):
            raise ValueError(f"labels must be in 0..{self.null_class} ({self.null_class} = null class)")
        return labels.long()

    def _context(self, context: Tensor | None, mask: Tensor | None, b: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Context tokens (B, context_len, dim) and their mask; no context = zeros, all masked out."""
        cfg = self.cfg
        if context is None:
            if mask is not None:
                raise ValueError("context_mask given without context")
            zeros = torch.zeros(b, cfg.context_len, cfg.context_dim, device=x.device, dtype=x.dtype)
            return self.context_embed(zeros), torch.zeros(b, cfg.context_len, dtype=torch.bool, device=x.device)
        if context.shape != (b, cfg.context_len, cfg.context_dim):
            raise ValueError(f"context must have shape ({b}, {cfg.context_len}, {cfg.context_dim}), "
                             f"got {tuple(context.shape)}")
        if mask is not None and mask.shape != (b, cfg.context_len):
            raise ValueError(f"context_mask must have shape ({b}, {cfg.context_len}), got {tuple(mask.shape)}")
        return self.context_embed(context.to(x.dtype)), None if mask is None else mask.bool()

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        labels: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """ε prediction for ``x`` (B, C, H, W) at ``timesteps`` (B,) or scalar; labels (B,); context (B, L, C_ctx)."""
        cfg = self.cfg
        if x.ndim != 4 or tuple(x.shape[1:]) != (cfg.in_chans, cfg.img_size, cfg.img_size):
            raise ValueError(f"x must be (B, {cfg.in_chans}, {cfg.img_size}, {cfg.img_size}), got {tuple(x.shape)}")
        b = x.shape[0]
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(b)
        tokens = [timestep_embedding(timesteps, cfg.dim).to(patches.dtype)[:, None]]
        labels = self._labels(labels, b, x.device)
        if self.label_emb is not None:
            tokens.append(self.label_emb(labels)[:, None])
        key_mask = None
        if self.context_embed is not None:
            ctx, ctx_mask = self._context(context, context_mask, b, patches)
            tokens.append(ctx)
            if ctx_mask is not None:
                ones = torch.ones(b, self.extras - cfg.context_len, dtype=torch.bool, device=x.device)
                key_mask = torch.cat([ones, ctx_mask, ones.new_ones(b, cfg.num_patches)], dim=1)
        elif context is not None or context_mask is not None:
            raise ValueError("this U-ViT has no text context (context_dim=None) but a context was given")
        h = torch.cat([*tokens, patches], dim=1) + self.pos_embed

        skips = []
        for blk in self.in_blocks:
            h = blk(h, key_mask=key_mask)
            skips.append(h)
        h = self.mid_block(h, key_mask=key_mask)
        recon = None
        if self.pcm is not None:  # VAP-Diffusion Sec. 2.4, PCM after the middle blocks
            h, recon = self.pcm(h, labels, key_mask)
        for blk in self.out_blocks:
            h = blk(h, skips.pop(), key_mask=key_mask)

        h = self.decoder_pred(self.norm(h))[:, self.extras:]
        p, s = cfg.patch_size, cfg.img_size // cfg.patch_size
        # unpatchify: (B, s·s, p·p·C) → (B, C, s·p, s·p)
        img = h.reshape(b, s, s, p, p, cfg.in_chans).permute(0, 5, 1, 3, 2, 4).reshape(b, cfg.in_chans, s * p, s * p)
        return self.final_layer(img), recon
