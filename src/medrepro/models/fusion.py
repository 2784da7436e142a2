"""Multimodal fusion baselines of EI Table 3 (Sec. 4.2) on the same ViT towers and adapters as EI.

Every model maps a batch (modality → (B, 3, H, W) or slice stacks (B, S, 3, H, W)) to logits (B, C) and has
``training_loss(batch, y)`` (CE, or BCE for multi-label). The backbone adaptation is the factory's
``adapter_method``: ``full`` reproduces the full-parameter-tuned originals, ``mor`` gives MM-MIL-MoR / MMRAD-MoR,
``vpt`` MMRAD's prompt learning (Sec. 4.2). Choices, one per line:

- concat (CosCat [25]): per-modality final [CLS] features concatenated → Linear(M·D, C).
- mmmil (MM-MIL [10]): attention-MIL weights (Ilse et al. 2018: Linear(D, 128) → tanh → Linear(128, 1), softmax over
  modalities) → weighted sum of the modality features → Linear(D, C).
- raddiag (RadDiag [23]): learnable fusion [CLS] + modality embeddings, one pre-norm TransformerEncoderLayer over
  [CLS; f_1..f_M] → LayerNorm → fusion [CLS] (``pool="cls"``) or token mean (``pool="mean"``) → Linear(D, C).
- mmrad (MMRAD [9], simplified: SAM backbone and prompt generator not reproduced): two pre-norm cross-attention
  blocks in sequence, each modality's tokens attending to the other modalities' tokens, → concat of the per-modality
  [CLS] → Linear(M·D, C).
- unimodel (UniModel, Sec. 4.2): one tower; the patch tokens (``ViTTower.tokens``, pos-embed included, no modality
  embedding) of all modalities concatenated after the first modality's [CLS]/registers into one sequence.
- Volumes: slice features (or tokens) mean-pooled over slices (paper Sec. 4.1); UniModel concatenates the modalities
  per slice index (all modalities need the same S) and mean-pools the slice features.
- dynmm (DynMM [19], modality-level): experts = one linear head per modality on its own feature and one on the
  concatenation; a gate (Linear(M·D, D) → ReLU → Linear(D, E)) on the concatenated features picks one expert per
  sample — straight-through Gumbel-softmax (τ = 1) in training, argmax at inference — with DynMM's resource loss
  λ·Σ_e g_e·cost_e (cost = towers an expert needs / M; λ = ``resource_weight``, 0.01). All towers always run here,
  so the selection changes the prediction, not the compute; DynMM's separate raw-input gate network is replaced by
  the towers' features (our reading, the EI paper gives no details).
- sfusion (SFusion [11]): modality features as tokens (+ modality embeddings) → two pre-norm self-attention layers
  → per-channel softmax over modalities ("modal attention") → weighted sum of the self-attended features →
  LayerNorm → Linear(D, C). The volumetric N-to-one block reduced to [CLS] vectors (our reading).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.models.backbones import ViTTower
from medrepro.models.ei import (
    build_towers,
    classification_loss,
    encode,
    flatten_slices,
)
from medrepro.models.slices import pool_slices
from medrepro.registry import Registry

__all__ = [
    "FUSION_METHODS",
    "ConcatFusion",
    "CrossAttentionBlock",
    "DynMMFusion",
    "FusionModel",
    "LateFusion",
    "MMMILFusion",
    "MMRADFusion",
    "RadDiagFusion",
    "SFusionFusion",
    "UniModel",
    "build_fusion",
    "register_fusion",
]

#: the Table 3 baselines by name, filled by ``@register_fusion`` (read-only mapping, registration order)
FUSION_METHODS: Registry[type[FusionModel]] = Registry("fusion method")
register_fusion = FUSION_METHODS.register


class FusionModel(nn.Module):
    """Base of the Table 3 baselines: ``forward(batch) -> logits`` and ``training_loss(batch, y)``."""

    def __init__(self, modalities: Sequence[str], num_classes: int, multilabel: bool, slice_pool: str) -> None:
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"fusion needs >= 2 modalities, got {list(modalities)}")
        self.modalities = list(modalities)
        self.num_classes, self.multilabel, self.slice_pool = num_classes, multilabel, slice_pool

    def _inputs(self, batch: Mapping[str, Tensor]) -> list[Tensor]:
        missing = [m for m in self.modalities if m not in batch]
        if missing:
            raise KeyError(f"batch lacks modalities {missing}; has {sorted(batch)}")
        return [batch[m] for m in self.modalities]

    def training_loss(self, batch: Mapping[str, Tensor], y: Tensor) -> Tensor:
        """CE (BCE-with-logits for multi-label) of the fused prediction."""
        return classification_loss(self(batch), y, self.multilabel)

    @classmethod
    def build(
        cls,
        tower_cfg: Mapping[str, Any],
        modalities: Sequence[str],
        num_classes: int,
        adapter_method: str,
        adapter_state: Mapping[str, Mapping[str, Tensor]] | None = None,
        **options: Any,
    ) -> FusionModel:
        """Build towers (``build_vit`` + ``apply_adapters`` [+ state]) and the model; see ``build_fusion``."""
        raise NotImplementedError


class LateFusion(FusionModel):
    """Fusion after unimodal embedding (Table 1): one tower per modality → features → ``fuse``."""

    uses_tokens: ClassVar[bool] = False  # fuse() gets (B, M, N, D) normed tokens instead of (B, M, D) features

    def __init__(
        self,
        towers: Mapping[str, ViTTower],
        num_classes: int,
        multilabel: bool = False,
        slice_pool: str = "mean",
    ) -> None:
        super().__init__(list(towers), num_classes, multilabel, slice_pool)
        self.towers = nn.ModuleDict(dict(towers))
        self.dim = next(iter(towers.values())).embed_dim

    @classmethod
    def build(
        cls,
        tower_cfg: Mapping[str, Any],
        modalities: Sequence[str],
        num_classes: int,
        adapter_method: str,
        adapter_state: Mapping[str, Mapping[str, Tensor]] | None = None,
        **options: Any,
    ) -> FusionModel:
        adapter_kwargs = options.pop("adapter_kwargs", None)
        (towers,) = build_towers(tower_cfg, modalities, adapter_method, adapter_state, adapter_kwargs=adapter_kwargs)
        return cls(towers, num_classes, **options)

    def _tokens(self, tower: ViTTower, x: Tensor) -> Tensor:
        flat, slices = flatten_slices(x)
        final, _ = tower.forward_blocks(tower.tokens(flat))
        return pool_slices(tower.vit.norm(final), slices, self.slice_pool)

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Unimodal embeddings stacked over modalities: (B, M, D), or (B, M, N, D) tokens if ``uses_tokens``."""
        towers = [self.towers[m] for m in self.modalities]
        if self.uses_tokens:
            return torch.stack([self._tokens(t, x) for t, x in zip(towers, self._inputs(batch), strict=True)], 1)
        feats = [encode(t, x, pool=self.slice_pool)[0] for t, x in zip(towers, self._inputs(batch), strict=True)]
        return torch.stack(feats, dim=1)

    def fuse(self, feats: Tensor) -> Tensor:
        """(B, M, D) unimodal features → logits (B, C)."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.fuse(self.encode(batch))


@register_fusion("concat")
class ConcatFusion(LateFusion):
    """CosCat-style fusion by vector concatenation (Sec. 2.1, Group I)."""

    def __init__(self, towers: Mapping[str, ViTTower], num_classes: int, **kw: Any) -> None:
        super().__init__(towers, num_classes, **kw)
        self.head = nn.Linear(self.dim * len(self.modalities), num_classes)

    def fuse(self, feats: Tensor) -> Tensor:
        return self.head(feats.flatten(1))  # CosCat: concat(f_1..f_M) → linear


@register_fusion("mmmil")
class MMMILFusion(LateFusion):
    """MM-MIL: weighted summation, weights from a lightweight attention-MIL module (Sec. 2.1, Group II)."""

    def __init__(self, towers: Mapping[str, ViTTower], num_classes: int, attn_dim: int = 128, **kw: Any) -> None:
        super().__init__(towers, num_classes, **kw)
        self.attention = nn.Sequential(nn.Linear(self.dim, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1))
        self.head = nn.Linear(self.dim, num_classes)

    def weights(self, feats: Tensor) -> Tensor:
        """Attention-MIL instance weights (B, M) over the modality features."""
        return self.attention(feats).squeeze(-1).softmax(-1)

    def fuse(self, feats: Tensor) -> Tensor:
        return self.head((self.weights(feats).unsqueeze(-1) * feats).sum(1))  # MM-MIL: Σ_m a_m f_m


def _learned_tokens(n: int, dim: int) -> nn.Parameter:
    """(1, n, dim) learnable tokens / embeddings, truncated-normal initialised (std 0.02, as timm's ViT tokens)."""
    tokens = nn.Parameter(torch.zeros(1, n, dim))
    nn.init.trunc_normal_(tokens, std=0.02)
    return tokens


def _encoder_layer(dim: int, num_heads: int) -> nn.TransformerEncoderLayer:
    """The pre-norm self-attention layer (GELU MLP ×4, no dropout) the modality-token fusions share."""
    return nn.TransformerEncoderLayer(
        dim, num_heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )


@register_fusion("raddiag")
class RadDiagFusion(LateFusion):
    """RadDiag: self-attention (transformer encoder) over the modality features (Sec. 2.1, Group III)."""

    def __init__(
        self,
        towers: Mapping[str, ViTTower],
        num_classes: int,
        num_heads: int = 8,
        pool: str = "cls",
        **kw: Any,
    ) -> None:
        super().__init__(towers, num_classes, **kw)
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        d, m = self.dim, len(self.modalities)
        self.pool = pool
        self.cls_token = _learned_tokens(1, d)
        self.modality_embed = _learned_tokens(m, d)
        self.encoder = _encoder_layer(d, num_heads)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)

    def fuse(self, feats: Tensor) -> Tensor:
        x = torch.cat([self.cls_token.expand(feats.shape[0], -1, -1), feats + self.modality_embed], dim=1)
        x = self.norm(self.encoder(x))  # RadDiag: self-attention across modalities
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(1))


@register_fusion("sfusion")
class SFusionFusion(LateFusion):
    """SFusion: self-attention over the modality features, then per-channel modality weights (Sec. 2.1, Group II)."""

    def __init__(
        self, towers: Mapping[str, ViTTower], num_classes: int, num_heads: int = 8, n_layers: int = 2, **kw: Any
    ) -> None:
        super().__init__(towers, num_classes, **kw)
        d, m = self.dim, len(self.modalities)
        self.modality_embed = _learned_tokens(m, d)
        self.encoder = nn.TransformerEncoder(_encoder_layer(d, num_heads), n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)

    def weights(self, z: Tensor) -> Tensor:
        """Modal attention: softmax over the M modalities of every channel of the self-attended features (B, M, D)."""
        return z.softmax(dim=1)

    def fuse(self, feats: Tensor) -> Tensor:
        z = self.encoder(feats + self.modality_embed)  # SFusion: self-attention across the N inputs
        return self.head(self.norm((self.weights(z) * z).sum(1)))  # N-to-one: Σ_m w_m ⊙ z_m


@register_fusion("dynmm")
class DynMMFusion(LateFusion):
    """DynMM (modality level): a gate picks, per sample, a unimodal expert or the concatenation expert (Group I)."""

    def __init__(
        self, towers: Mapping[str, ViTTower], num_classes: int, resource_weight: float = 0.01, tau: float = 1.0,
        **kw: Any,
    ) -> None:
        super().__init__(towers, num_classes, **kw)
        d, m = self.dim, len(self.modalities)
        self.experts = nn.ModuleList([nn.Linear(d, num_classes) for _ in range(m)] + [nn.Linear(m * d, num_classes)])
        self.gate = nn.Sequential(nn.Linear(m * d, d), nn.ReLU(), nn.Linear(d, m + 1))
        self.register_buffer("cost", torch.tensor([1.0 / m] * m + [1.0]), persistent=False)  # towers used / M
        self.resource_weight, self.tau = resource_weight, tau

    def _expert_logits(self, feats: Tensor) -> Tensor:
        """(B, E, C): every expert's prediction (unimodal experts, then the concatenation expert)."""
        outs = [head(feats[:, i]) for i, head in enumerate(self.experts[:-1])]
        return torch.stack([*outs, self.experts[-1](feats.flatten(1))], dim=1)

    def select(self, feats: Tensor) -> Tensor:
        """One-hot expert choice (B, E): straight-through Gumbel-softmax in training, argmax in eval."""
        logits = self.gate(feats.flatten(1))
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=True)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)

    def _forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        feats = self.encode(batch)
        g = self.select(feats)
        return (g.unsqueeze(-1) * self._expert_logits(feats)).sum(1), g  # DynMM: output of the chosen expert

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self._forward(batch)[0]

    def training_loss(self, batch: Mapping[str, Tensor], y: Tensor) -> Tensor:
        """Task loss + λ · expected resource cost of the chosen experts (DynMM's resource-aware objective)."""
        logits, g = self._forward(batch)
        return classification_loss(logits, y, self.multilabel) + self.resource_weight * (g @ self.cost).mean()


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention with a residual: ``q + MHA(LN(q), LN(kv), LN(kv))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, q: Tensor, kv: Tensor) -> Tensor:
        kv = self.norm_kv(kv)
        return q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]


@register_fusion("mmrad")
class MMRADFusion(LateFusion):
    """MMRAD (simplified): two cross-attention blocks in sequence between modality token sequences (Group III)."""

    uses_tokens = True

    def __init__(
        self, towers: Mapping[str, ViTTower], num_classes: int, num_heads: int = 8, n_blocks: int = 2, **kw: Any
    ) -> None:
        super().__init__(towers, num_classes, **kw)
        self.blocks = nn.ModuleList(CrossAttentionBlock(self.dim, num_heads) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim * len(self.modalities), num_classes)

    def fuse(self, feats: Tensor) -> Tensor:
        x = feats  # (B, M, N, D)
        m = x.shape[1]
        for blk in self.blocks:  # MMRAD: cross-attention blocks in sequence
            others = [torch.cat([x[:, r] for r in range(m) if r != t], dim=1) for t in range(m)]
            x = torch.stack([blk(x[:, t], others[t]) for t in range(m)], dim=1)
        return self.head(self.norm(x[:, :, 0]).flatten(1))  # per-modality [CLS], concatenated


@register_fusion("unimodel")
class UniModel(FusionModel):
    """UniModel (Sec. 4.2): one tower over the patch tokens of all modalities merged into one sequence."""

    STATE_KEY: ClassVar[str] = "unimodel"

    def __init__(
        self,
        tower: ViTTower,
        modalities: Sequence[str],
        num_classes: int,
        multilabel: bool = False,
        slice_pool: str = "mean",
    ) -> None:
        super().__init__(modalities, num_classes, multilabel, slice_pool)
        self.tower = tower
        self.head = nn.Linear(tower.embed_dim, num_classes)

    @classmethod
    def build(
        cls,
        tower_cfg: Mapping[str, Any],
        modalities: Sequence[str],
        num_classes: int,
        adapter_method: str,
        adapter_state: Mapping[str, Mapping[str, Tensor]] | None = None,
        **options: Any,
    ) -> FusionModel:
        """One tower; its adapter state, if any, is ``adapter_state["unimodel"]``."""
        if adapter_state is not None and set(adapter_state) != {cls.STATE_KEY}:
            raise ValueError(f"unimodel has one tower: give its adapter state under {cls.STATE_KEY!r} only")
        adapter_kwargs = options.pop("adapter_kwargs", None)
        (towers,) = build_towers(
            tower_cfg, [cls.STATE_KEY], adapter_method, adapter_state, adapter_kwargs=adapter_kwargs
        )
        return cls(towers[cls.STATE_KEY], modalities, num_classes, **options)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        flat = [flatten_slices(x) for x in self._inputs(batch)]
        slices = {s for _, s in flat}
        if len(slices) != 1:
            raise ValueError(f"unimodel needs the same number of slices for every modality, got {slices}")
        toks = [self.tower.tokens(x) for x, _ in flat]
        n_pre = self.tower.num_prefix_tokens
        # UniModel: one [CLS] (+ registers), then the patch tokens of every modality in one sequence
        seq = torch.cat([toks[0], *(t[:, n_pre:] for t in toks[1:])], dim=1)
        final, _ = self.tower.forward_blocks(seq)
        feat = self.tower.vit.forward_head(self.tower.vit.norm(final), pre_logits=True)
        return self.head(pool_slices(feat, slices.pop(), self.slice_pool))


def build_fusion(
    name: str,
    tower_cfg: Mapping[str, Any],
    modalities: list[str],
    num_classes: int,
    adapter_method: str,
    adapter_state: dict[str, dict[str, Tensor]] | None = None,
    **options: Any,
) -> FusionModel:
    """A Table 3 baseline by registered name (``FUSION_METHODS``); MM-MIL-MoR = ``build_fusion("mmmil", …, "mor")``.

    ``adapter_state``: modality → unimodal ``adapter_state_dict`` (heads are not loaded; fusion heads are new).
    ``options``: ``multilabel``, ``slice_pool``, the class's own (e.g. ``attn_dim``, ``num_heads``, ``pool``),
    ``adapter_kwargs`` for ``apply_adapters``.
    """
    model_cls = FUSION_METHODS.lookup(name)
    return model_cls.build(tower_cfg, modalities, num_classes, adapter_method, adapter_state, **options)
