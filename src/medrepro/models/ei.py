"""EI: Early Intervention network (Sec. 3, Algorithm 1) on ``ViTTower`` towers adapted with ``apply_adapters``.

Per modality an auxiliary tower φ_a gives a [CLS] that, through one adapter per ordered (target, reference) pair,
becomes an [INT] token steering the target's primary tower φ_p (Eq. 1–2); per-modality primary logits are fused by
a gate (Eq. 3) and trained with L_p + λ1·L_aa + λ2·L_ag (Eq. 5–8).

Choices where paper and authors' code differ or are silent (paper by default; code behaviour as an option):

- [INT] source (Eq. 1): ``int_layer`` = L (default) takes the final normed [CLS] (authors); l_a < L the raw Z^l[0].
- [INT] placement (Eq. 2): appended after all tokens (after pos-embed, none of its own) before ``insert_layer`` (0).
- [INT] adapter: LayerNorm(D) → Linear(D, D/2) → GELU → Linear(D/2, D) (authors' two-layer MLP), one per (t, r) pair.
- ``detach_int=False``: the reference [CLS] is not detached, so L_p also trains the auxiliary towers (authors).
- ``detach_fusion=False`` (paper: Eq. 5 / Algorithm 1 back-propagate CE(y, ŷ) into the towers); True = authors' code
  (gate input and per-modality logits detached, the fused loss trains only the gate).
- L_p = CE(ŷ) + Σ_t CE(ŷ_t) (Eq. 5), L_aa = Σ_i CE(ŷ_a,i) (Eq. 6); BCE-with-logits for multi-label (authors, MRNet).
- L_ag = CE(π, α) = −Σ_m π_m log α_m (Eq. 7) with π = one-hot argmax of the caller's per-modality prior scores
  (``modality_prior``, e.g. unimodal train mAP); ``prior_onehot=False`` uses the normalised scores as a soft π.
- ``gate_prior="authors"``: per-sample π = one-hot argmin_m(CE_m · prior_gaps), gaps [1, …, 1, 1e-3] (≈ always the
  last modality); ``gate_double_softmax=True`` = commit 29c021f (CE on already-softmaxed gates).
- Auxiliary heads are the auxiliary towers' own timm heads (kept from the unimodal checkpoint); primary heads are
  re-initialised by ``build_ei`` (authors).
- Volumes (B, S, 3, H, W): slices run as B·S images, each sample's [INT] repeated per slice; slice features
  (final normed [CLS]) are pooled by ``aux_slice_pool`` in the auxiliary and mean-pooled in the primary
  (``primary_slice_pool``). The paper (Sec. 4.1) states mean pooling for every sample-level feature; the authors'
  code max-pools the auxiliary (and unimodal) towers. ``ei.slice_pool`` sets the auxiliary's and pre-adaptation's.
- Towers are built once with ``build_vit`` and deep-copied (2 per modality), so a weights file is read once.
- ``use_int=False`` (``ei.intervention: false``, a mutation, not the paper): no [INT] is built or appended, the
  primary towers run alone; the auxiliary towers still train through L_aa.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.models.adapters import AdapterStateError, apply_adapters, load_adapter_state_dict
from medrepro.models.backbones import ViTTower, build_vit
from medrepro.models.slices import SLICE_POOLS, pool_slices

__all__ = [
    "EINetwork",
    "EIOutput",
    "INTAdapter",
    "build_ei",
    "build_towers",
    "classification_loss",
    "encode",
    "flatten_slices",
]

GATE_PRIORS: tuple[str, ...] = ("paper", "authors")
INT_SCALES: tuple[str, ...] = ("none", "match")  # ei.int_scale: [INT] as its adapter gives it | at the tokens' norm
AUTHORS_GAP = 1e-3  # prior_gaps entry of the last modality in the authors' configs


# ----------------------------------------------------------------------------------------- shared helpers


def classification_loss(logits: Tensor, y: Tensor, multilabel: bool, reduction: str = "mean") -> Tensor:
    """CE (class indices or (B, C) soft/one-hot targets) or, if ``multilabel``, BCE-with-logits averaged over classes.

    ``reduction="none"`` returns one value per sample (B,).
    """
    if multilabel:
        per = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none").mean(1)
    else:
        target = y.long() if y.ndim == 1 else y.to(logits.dtype)
        per = F.cross_entropy(logits, target, reduction="none")
    if reduction == "none":
        return per
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per.mean()


def flatten_slices(x: Tensor) -> tuple[Tensor, int | None]:
    """(B, C, H, W) → itself and None; (B, S, C, H, W) → (B·S, C, H, W) and S."""
    if x.ndim == 4:
        return x, None
    if x.ndim == 5:
        return x.flatten(0, 1), int(x.shape[1])
    raise ValueError(f"expected images (B, C, H, W) or slice stacks (B, S, C, H, W), got shape {tuple(x.shape)}")


def encode(
    tower: ViTTower,
    x: Tensor,
    extra: Tensor | None = None,
    insert_at: int = 0,
    cls_at: int | None = None,
    pool: str = "mean",
    extra_scale: str = "none",
) -> tuple[Tensor, Tensor | None]:
    """Sample feature (B, D) = final normed [CLS] (timm ``pre_logits``) and the raw [CLS] of layer ``cls_at`` (B, D).

    ``x``: (B, 3, H, W) or slice stacks (B, S, 3, H, W); ``extra`` (B, k, D) is repeated per slice, and slice outputs
    are pooled by ``pool``; ``extra_scale`` as ``ViTTower.forward_blocks``.
    """
    flat, slices = flatten_slices(x)
    if extra is not None and slices is not None:
        extra = extra.repeat_interleave(slices, 0)  # authors: the same [INT] for every slice
    final, cls = tower.forward_blocks(tower.tokens(flat), extra, insert_at, cls_at, extra_scale)
    feat = tower.vit.forward_head(tower.vit.norm(final), pre_logits=True)  # Eq. 2: CLS^_t = φ_p(Z^_t^0, L)[0]
    return pool_slices(feat, slices, pool), None if cls is None else pool_slices(cls, slices, pool)


def _strip_prefix(state: Mapping[str, Tensor], prefix: str = "vit.") -> dict[str, Tensor]:
    """Accept state dicts saved from a ``ViTTower`` (keys ``vit.…``) as well as from the bare ViT."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _load_state(vit: nn.Module, state: Mapping[str, Tensor], keep_head: bool) -> None:
    """Load an adapter state; its head only if ``keep_head`` and the model has a trainable head."""
    state = _strip_prefix(state)
    has_head = any(k.startswith("head.") for k in state)
    model_head = any(p.requires_grad for p in vit.head.parameters())
    include = keep_head and has_head and model_head
    if not include:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    load_adapter_state_dict(vit, state, include_head=include)


def build_towers(
    tower_cfg: Mapping[str, Any],
    modalities: Sequence[str],
    adapter_method: str = "mor",
    adapter_state: Mapping[str, Mapping[str, Tensor]] | None = None,
    *,
    copies: int = 1,
    num_classes: int = 0,
    keep_head: bool = True,
    adapter_kwargs: Mapping[str, Any] | None = None,
) -> list[dict[str, ViTTower]]:
    """``copies`` independent adapted towers per modality: ``[copy][modality] -> ViTTower``.

    The ViT is built once (``build_vit``, weights checked) and deep-copied; each copy gets ``apply_adapters`` and, if
    given, its modality's ``adapter_state`` (from ``adapter_state_dict``; head loaded only with ``keep_head``).
    """
    if adapter_state is not None:
        missing = [m for m in modalities if m not in adapter_state]
        if missing:
            raise AdapterStateError(f"adapter_state has no entry for modalities {missing}; has {sorted(adapter_state)}")
    base = build_vit(dict(tower_cfg, num_classes=num_classes))
    towers: list[dict[str, ViTTower]] = [{} for _ in range(copies)]
    for m in modalities:
        for c in range(copies):
            vit = apply_adapters(copy.deepcopy(base), adapter_method, **dict(adapter_kwargs or {}))
            if adapter_state is not None:
                _load_state(vit, adapter_state[m], keep_head)  # Sec. 4.1: init from the unimodal pre-adapted model
            towers[c][m] = ViTTower(vit)
    return towers


def _ensure_head(tower: ViTTower, num_classes: int) -> None:
    """Give the tower a Linear(D, num_classes) head unless it already has one."""
    head = tower.vit.head
    if not (isinstance(head, nn.Linear) and head.out_features == num_classes):
        tower.vit.reset_classifier(num_classes)


# ---------------------------------------------------------------------------------------------- EI modules


class INTAdapter(nn.Sequential):
    """Sec. 3.1: two-layer MLP turning a reference [CLS] into an [INT] token (LayerNorm → Linear → GELU → Linear)."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        hidden = hidden or dim // 2
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


@dataclass
class EIOutput:
    """All EI predictions of a batch: fused logits (B, C), per-modality primary and auxiliary logits, gate α (B, M)."""

    fused: Tensor
    primary: dict[str, Tensor]
    auxiliary: dict[str, Tensor]
    gate: Tensor
    gate_logits: Tensor


def _prior_vector(prior: Sequence[float] | Mapping[str, float], modalities: Sequence[str], onehot: bool) -> Tensor:
    """π (M,) from per-modality scores: one-hot of the best modality (Sec. 3.5) or the normalised scores."""
    if isinstance(prior, Mapping):
        missing = [m for m in modalities if m not in prior]
        if missing:
            raise ValueError(f"modality_prior lacks modalities {missing}")
        values = [float(prior[m]) for m in modalities]
    else:
        values = [float(v) for v in prior]
    if len(values) != len(modalities):
        raise ValueError(f"modality_prior needs {len(modalities)} values (one per modality), got {len(values)}")
    scores = torch.tensor(values, dtype=torch.float32)
    if onehot:
        return F.one_hot(scores.argmax(), len(modalities)).float()  # Sec. 3.5: π one-hot on the winning modality
    if (scores < 0).any() or scores.sum() <= 0:
        raise ValueError(f"a soft modality_prior needs non-negative scores with a positive sum, got {values}")
    return scores / scores.sum()


class EINetwork(nn.Module):
    """The EI network of Algorithm 1 from per-modality auxiliary and primary towers (separate copies).

    ``forward(batch)`` returns the fused logits ŷ (Eq. 3) used at inference; ``forward_all`` returns every part;
    ``training_loss(batch, y)`` is Eq. 8 and leaves its parts (detached) in ``last_loss_parts``.
    """

    def __init__(
        self,
        auxiliary: Mapping[str, ViTTower],
        primary: Mapping[str, ViTTower],
        num_classes: int,
        *,
        int_layer: int | None = None,
        insert_layer: int = 0,
        detach_int: bool = False,
        detach_fusion: bool = False,
        multilabel: bool = False,
        use_int: bool = True,
        lambda_aa: float = 0.3,
        lambda_ag: float = 0.1,
        modality_prior: Sequence[float] | Mapping[str, float] | None = None,
        prior_onehot: bool = True,
        gate_prior: str = "paper",
        prior_gaps: Sequence[float] | None = None,
        gate_double_softmax: bool = False,
        aux_slice_pool: str = "mean",
        primary_slice_pool: str = "mean",
        int_hidden: int | None = None,
        int_scale: str = "none",
    ) -> None:
        super().__init__()
        mods = list(auxiliary)
        if len(mods) < 2 or set(primary) != set(mods):
            raise ValueError(f"EI needs >= 2 modalities with both towers; auxiliary {mods}, primary {list(primary)}")
        if any(auxiliary[m] is primary[m] for m in mods):
            raise ValueError("auxiliary and primary towers must be separate copies")
        towers = [*auxiliary.values(), *primary.values()]
        dim, depth = towers[0].embed_dim, towers[0].depth
        if any(t.embed_dim != dim or t.depth != depth for t in towers):
            raise ValueError("all towers must share embed_dim and depth")
        self.int_layer = depth if int_layer is None else int(int_layer)
        if not 1 <= self.int_layer <= depth:
            raise ValueError(f"int_layer must be in 1..{depth}, got {int_layer}")
        if not 0 <= insert_layer < depth:
            raise ValueError(f"insert_layer must be in 0..{depth - 1}, got {insert_layer}")
        if gate_prior not in GATE_PRIORS:
            raise ValueError(f"gate_prior must be one of {GATE_PRIORS}, got {gate_prior!r}")
        if int_scale not in INT_SCALES:
            raise ValueError(f"int_scale must be one of {INT_SCALES}, got {int_scale!r}")
        for name, pool in (("aux_slice_pool", aux_slice_pool), ("primary_slice_pool", primary_slice_pool)):
            if pool not in SLICE_POOLS:
                raise ValueError(f"{name} must be one of {SLICE_POOLS}, got {pool!r}")
        self.modalities = mods
        self.num_classes, self.multilabel = num_classes, multilabel
        self.insert_layer, self.use_int = insert_layer, use_int
        self.detach_int, self.detach_fusion = detach_int, detach_fusion
        self.lambda_aa, self.lambda_ag = lambda_aa, lambda_ag
        self.prior_onehot, self.gate_prior, self.gate_double_softmax = prior_onehot, gate_prior, gate_double_softmax
        self.aux_slice_pool, self.primary_slice_pool = aux_slice_pool, primary_slice_pool
        self.int_scale = int_scale
        self.auxiliary = nn.ModuleDict({m: auxiliary[m] for m in mods})
        self.primary = nn.ModuleDict({m: primary[m] for m in mods})
        for tower in towers:
            _ensure_head(tower, num_classes)  # Eq. 3 / Eq. 6: Linear(CLS) per tower
        # Eq. 1: one adapter per ordered (target, reference) pair
        self.int_adapters = nn.ModuleDict(
            {t: nn.ModuleDict({r: INTAdapter(dim, int_hidden) for r in self.references(t)}) for t in mods}
        )
        self.gate = nn.Linear(dim * len(mods), len(mods))  # Eq. 3: Gating = Linear + softmax
        self.register_buffer("prior", None, persistent=False)
        if modality_prior is not None:
            self.set_prior(modality_prior)
        gaps = [1.0] * (len(mods) - 1) + [AUTHORS_GAP] if prior_gaps is None else [float(g) for g in prior_gaps]
        if len(gaps) != len(mods):
            raise ValueError(f"prior_gaps needs {len(mods)} values, got {len(gaps)}")
        self.register_buffer("prior_gaps", torch.tensor(gaps), persistent=False)
        self.last_loss_parts: dict[str, Tensor] = {}

    def references(self, target: str) -> list[str]:
        """R = {1..M} \\ {t} (Sec. 3)."""
        return [m for m in self.modalities if m != target]

    def set_prior(self, modality_prior: Sequence[float] | Mapping[str, float]) -> None:
        """Set π from per-modality scores (e.g. unimodal training mAP); see ``prior_onehot``."""
        like = self.gate.weight
        self.prior = _prior_vector(modality_prior, self.modalities, self.prior_onehot).to(like.device, like.dtype)

    def _inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = [m for m in self.modalities if m not in batch]
        if missing:
            raise KeyError(f"batch lacks modalities {missing}; has {sorted(batch)}")
        return {m: batch[m] for m in self.modalities}

    def forward_all(self, batch: Mapping[str, Tensor]) -> EIOutput:
        """Algorithm 1 forward: auxiliary [CLS] → [INT] → primary features → per-modality logits → gated fusion."""
        x = self._inputs(batch)
        last = self.int_layer == self.auxiliary[self.modalities[0]].depth
        aux_logits: dict[str, Tensor] = {}
        int_src: dict[str, Tensor] = {}
        for m in self.modalities:
            tower = self.auxiliary[m]
            feat, cls = encode(tower, x[m], cls_at=None if last else self.int_layer, pool=self.aux_slice_pool)
            aux_logits[m] = tower.vit.head(feat)  # Eq. 6: ŷ_a,i = Linear(CLS_a,i)
            src = feat if last else cls  # Eq. 1: CLS_a,r = φ_a,r(Conv(x[r]), l_a)[0]
            if src is None:
                raise ValueError("[INT] needs towers with a class token")
            int_src[m] = src.detach() if self.detach_int else src
        feats: dict[str, Tensor] = {}
        logits: dict[str, Tensor] = {}
        for t in self.modalities:
            ints = None
            if self.use_int:  # Eq. 1: INT = Adapter(CLS_a,R)
                ints = torch.stack([self.int_adapters[t][r](int_src[r]) for r in self.references(t)], dim=1)
            # Eq. 2: [INT] concatenated to the target's tokens before layer `insert_layer`
            feats[t], _ = encode(self.primary[t], x[t], ints, self.insert_layer, pool=self.primary_slice_pool,
                                 extra_scale=self.int_scale)
            logits[t] = self.primary[t].vit.head(feats[t])  # Eq. 3: ŷ_t = Linear(CLS^_t)
        fused, gate_logits = self._fuse(feats, logits)
        return EIOutput(fused, logits, aux_logits, gate_logits.softmax(-1), gate_logits)

    def _fuse(self, feats: Mapping[str, Tensor], logits: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Eq. 3: α = softmax(Gating([CLS^_1..M])), ŷ = Σ_t α_t ŷ_t; inputs detached with ``detach_fusion``."""
        f = torch.cat([feats[m] for m in self.modalities], dim=-1)
        y = torch.stack([logits[m] for m in self.modalities], dim=1)  # (B, M, C)
        if self.detach_fusion:  # authors' code: the fused loss trains only the gate
            f, y = f.detach(), y.detach()
        gate_logits = self.gate(f)
        return (gate_logits.softmax(-1).unsqueeze(-1) * y).sum(1), gate_logits

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Fused logits ŷ (B, C), the inference output (Sec. 3.3)."""
        return self.forward_all(batch).fused

    def gating_loss(self, gate_logits: Tensor, primary_losses: Tensor | None = None) -> Tensor:
        """Eq. 7: L_ag = CE(π, α); ``primary_losses`` (B, M) = per-sample primary CE (``gate_prior="authors"``)."""
        if self.gate_prior == "authors":
            if primary_losses is None:
                raise ValueError("gate_prior='authors' needs the per-sample primary losses")
            # authors: π per sample = one-hot argmin_m(CE_m · prior_gaps)
            target = F.one_hot((primary_losses.detach() * self.prior_gaps).argmin(1), len(self.modalities))
            target = target.to(gate_logits.dtype)
        else:
            if self.prior is None:
                raise ValueError("L_ag needs the modality prior π: pass modality_prior= or call set_prior()")
            target = self.prior.to(gate_logits.dtype).expand_as(gate_logits)
        alpha_logits = gate_logits.softmax(-1) if self.gate_double_softmax else gate_logits  # 29c021f: softmax twice
        return -(target * alpha_logits.log_softmax(-1)).sum(-1).mean()

    def loss_terms(self, batch: Mapping[str, Tensor], y: Tensor) -> dict[str, Tensor]:
        """Eq. 5–8 with their graphs: total, fused, primary (L_p = fused + primary), aux (L_aa), gate (L_ag).

        L_ag is computed (and reported) even with λ2 = 0 when π is known; the total then gets nothing from it.
        """
        out = self.forward_all(batch)
        per_sample = torch.stack(
            [classification_loss(out.primary[m], y, self.multilabel, "none") for m in self.modalities], dim=1
        )
        fused = classification_loss(out.fused, y, self.multilabel)
        primary = per_sample.mean(0).sum()
        l_p = fused + primary  # Eq. 5: CE(y, ŷ) + Σ_t CE(y, ŷ_t)
        l_aa = torch.stack([classification_loss(out.auxiliary[m], y, self.multilabel) for m in self.modalities]).sum()
        known = self.lambda_ag or self.gate_prior == "authors" or self.prior is not None
        l_ag = self.gating_loss(out.gate_logits, per_sample) if known else fused.new_zeros(())
        total = l_p + self.lambda_aa * l_aa  # Eq. 8
        if self.lambda_ag:
            total = total + self.lambda_ag * l_ag
        return {"total": total, "fused": fused, "primary": primary, "aux": l_aa, "gate": l_ag}

    def training_loss(self, batch: Mapping[str, Tensor], y: Tensor) -> Tensor:
        """Eq. 8: L_p + λ1·L_aa + λ2·L_ag; parts (``loss_terms``, detached) in ``last_loss_parts``."""
        parts = self.loss_terms(batch, y)
        self.last_loss_parts = {k: v.detach() for k, v in parts.items()}
        return parts["total"]


def build_ei(
    tower_cfg: Mapping[str, Any],
    modalities: list[str],
    num_classes: int,
    adapter_method: str = "mor",
    adapter_state: dict[str, dict[str, Tensor]] | None = None,
    **options: Any,
) -> EINetwork:
    """EI with 2 towers per modality (``build_vit`` + ``apply_adapters``), both loaded from ``adapter_state[m]``.

    ``adapter_state``: modality → ``adapter_state_dict`` of the unimodal pre-adapted model (Sec. 4.1); its head
    initialises the auxiliary head, primary heads are re-initialised. ``options`` go to ``EINetwork`` (and
    ``adapter_kwargs`` to ``apply_adapters``).
    """
    adapter_kwargs = options.pop("adapter_kwargs", None)
    aux, primary = build_towers(
        tower_cfg,
        modalities,
        adapter_method,
        adapter_state,
        copies=2,
        num_classes=num_classes,
        adapter_kwargs=adapter_kwargs,
    )
    for tower in primary.values():
        tower.vit.reset_classifier(num_classes)  # authors: primary heads re-initialised
    return EINetwork(aux, primary, num_classes, **options)
