"""PEFT methods of the EI paper (Sec. 3.4, Sec. 4.3.4, Table 7) for timm VisionTransformers.

MoR (Eq. 4): per token, a router ``Linear(d_in, 4)`` + softmax gives ``[w0, w1, w2, w3]``; ``w0`` (the
bypass) is dropped without renormalising and ``h' = W h + sum_k w_k (alpha_k / r_k) B_k A_k h`` with ranks
2, 4, 8 and alpha = 2r.  LoRAMoE and "MoR w/o bypass" are the same mixture with equal ranks / no bypass.
Default layers: ``mlp.fc1`` and ``mlp.fc2`` of every block.  All but the new parameters are frozen;
``apply_adapters`` always leaves the classifier head trainable.

Trainable parameters for ViT-B/16 (timm ``vit_base_patch16_224``), counted WITH a 4-class head (3,076;
MMC-AMD has 4 classes).  Table 7's Params column only matches with the head counted in: LP = 3K is the head
alone, and without the head LoRA is 369K, MoR 1,475K (see ``tests/test_adapters.py``).

==============  =========  ==========  ==================================================================
Method          Paper (K)  Ours        Note
==============  =========  ==========  ==================================================================
FPT (CLIP)      86,180     85,802,500  timm ViT-B/16 CLIP has no 768x512 proj; pos-embed size and extras
FPT (DINOv2)    86,587     86,582,788  (proj, mask token) differ per checkpoint/resolution: not comparable
LP              3          3,076       head only
VPT             49         49,156      deep, 5 tokens x 12 layers (10 tokens/layer would give 95K)
LoSA            100 / 113  --          not implemented: its side-network layout is not in the paper
LateLoRA        77         76,804      inferred layout: LoRA r=4 on fused attn.qkv of the last 6 blocks
LoRA            372        371,716     r=4, alpha=8 on fc1/fc2
BitFit          106        105,988     all biases (incl. LayerNorm) + head
RLRR            292        291,844     RLRR-code layout: row/col rescale + shift per linear (q/k/v own
                                       col scales), SSF after norm1/norm2/final norm and patch embed
LoRAMoE         1,247      1,247,308   3 experts r=4, router Linear(d_in, 3)
MoR             1,478      1,477,732   ranks 2/4/8, router Linear(d_in, 4)
MoR w/o bypass  1,432      1,431,628   router Linear(d_in, 3)
==============  =========  ==========  ==================================================================
"""

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.errors import MedreproError
from medrepro.registry import Registry

__all__ = [
    "METHODS",
    "PEFT_METHODS",
    "AdapterStateError",
    "LoRABranch",
    "LoRALinear",
    "LoRAMixtureLinear",
    "MoRLinear",
    "LoRAMoELinear",
    "RLRRLinear",
    "ScaleShift",
    "PromptedBlocks",
    "apply_adapters",
    "count_trainable",
    "adapter_state_dict",
    "load_adapter_state_dict",
    "register_peft",
]

MLP_TARGETS: tuple[str, ...] = ("mlp.fc1", "mlp.fc2")
RLRR_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
BLOCK_NORMS: tuple[str, ...] = ("norm1", "norm2")


class AdapterStateError(MedreproError, ValueError):
    """An adapter state dict does not fit the model (missing/unexpected keys or wrong shapes)."""


def _frozen(base: nn.Module) -> nn.Module:
    base.requires_grad_(False)
    return base


# ----------------------------------------------------------------------------------------------- layers


class LoRABranch(nn.Module):
    """One low-rank update ``(alpha / r) * B A x`` (LoRA, Hu et al. 2022; the B_k A_k h term of Eq. 4)."""

    # Sec. 3.4 / Eq. 4: A kaiming-uniform(a=sqrt(5)), B zeros, so the update is exactly 0 at init.
    def __init__(self, d_in: int, d_out: int, r: int, alpha: float, like: Tensor) -> None:
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        kw = {"device": like.device, "dtype": like.dtype}
        self.r, self.scale = r, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, d_in, **kw))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


class LoRALinear(nn.Module):
    """Frozen ``base`` linear plus one LoRA branch: ``W x + (alpha / r) B A dropout(x)``."""

    # LoRA baseline of Table 7 (Sec. 4.3.4); same maths as peft's LoraLayer.
    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = _frozen(base)
        self.lora = LoRABranch(base.in_features, base.out_features, r, alpha, base.weight)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.lora(self.dropout(x))


class LoRAMixtureLinear(nn.Module):
    """Frozen ``base`` plus a per-token routed mixture of LoRAs (Eq. 4); shared by MoR and LoRAMoE.

    With ``bypass`` the router has one extra output (index 0, w0) that is dropped after the softmax, so the
    expert weights sum to ``1 - w0`` and the adaptation can be switched off.
    """

    # Eq. 4: [w0..wK] = softmax(Router(h)); h' = W h + sum_{k>=1} w_k B_k A_k h.
    def __init__(
        self,
        base: nn.Linear,
        ranks: Sequence[int],
        alphas: Sequence[float] | None = None,
        bypass: bool = True,
    ) -> None:
        super().__init__()
        alphas = [2.0 * r for r in ranks] if alphas is None else list(alphas)
        if len(alphas) != len(ranks) or not ranks:
            raise ValueError(f"need one alpha per rank, got ranks={list(ranks)} alphas={alphas}")
        d_in, d_out, w = base.in_features, base.out_features, base.weight
        self.base = _frozen(base)
        self.bypass = bypass
        pairs = zip(ranks, alphas, strict=True)
        self.experts = nn.ModuleList(LoRABranch(d_in, d_out, r, a, w) for r, a in pairs)
        self.router = nn.Linear(d_in, len(ranks) + int(bypass), device=w.device, dtype=w.dtype)
        # column k of the stacked ranks belongs to expert expert_of[k] and carries its alpha / r
        cols = [(k, e.scale) for k, e in enumerate(self.experts) for _ in range(e.r)]
        self.register_buffer("expert_of", torch.tensor([k for k, _ in cols], device=w.device), persistent=False)
        self.register_buffer("rank_scale", torch.tensor([s for _, s in cols], device=w.device, dtype=w.dtype),
                             persistent=False)

    def routing_weights(self, x: Tensor) -> Tensor:
        """Per-token expert weights ``[..., n_experts]`` (bypass column already dropped)."""
        p = torch.softmax(self.router(x), dim=-1)
        return p[..., 1:] if self.bypass else p

    def forward(self, x: Tensor) -> Tensor:
        # Eq. 4 with the experts stacked: sum_k w_k B_k A_k h = [B_1..B_K] ((w_k * alpha_k / r_k) ⊙ [A_1..A_K] h),
        # two matmuls instead of 2K (the same sum, in another floating-point order)
        p = self.routing_weights(x)
        a = torch.cat([e.lora_A for e in self.experts])
        b = torch.cat([e.lora_B for e in self.experts], dim=1)
        coef = p.index_select(-1, self.expert_of) * self.rank_scale
        return self.base(x) + F.linear(F.linear(x, a) * coef, b)


class MoRLinear(LoRAMixtureLinear):
    """MoR (Sec. 3.4): LoRAs of ranks 2/4/8 (alpha = 2r) and a 4-way router with bypass."""

    # Sec. 3.4, Eq. 4; bypass=False gives "MoR w/o bypass" (Table 7).
    def __init__(
        self,
        base: nn.Linear,
        ranks: Sequence[int] = (2, 4, 8),
        alphas: Sequence[float] | None = None,
        bypass: bool = True,
    ) -> None:
        super().__init__(base, ranks, alphas, bypass)


class LoRAMoELinear(LoRAMixtureLinear):
    """LoRAMoE (Dou et al. 2024) as compared in Table 7: equal-rank experts, router ``Linear(d_in, n)``."""

    # Table 7 baseline: Eq. 4 with r_k = r and a plain softmax router (no bypass).
    def __init__(self, base: nn.Linear, n_experts: int = 3, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__(base, (r,) * n_experts, (alpha,) * n_experts, bypass=False)


class RLRRLinear(nn.Module):
    """RLRR (Dong et al. 2024): ``W' = W + W * (s_row s_col)``, ``b' = b + shift``; base frozen.

    ``col_groups`` > 1 gives each of that many equal output chunks its own column scale (fused timm
    ``qkv`` = the separate q/k/v layers of the RLRR code).
    """

    # Table 7 baseline (Sec. 2.2: "row-wise and column-wise rescaling vectors"); init as the RLRR code.
    def __init__(self, base: nn.Linear, col_groups: int = 1) -> None:
        super().__init__()
        if base.out_features % col_groups:
            raise ValueError(f"out_features={base.out_features} not divisible by col_groups={col_groups}")
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.base = _frozen(base)
        self.col_groups = col_groups
        self.scale_col = nn.Parameter(torch.empty(col_groups, base.in_features, **kw))
        self.scale_row = nn.Parameter(torch.empty(base.out_features, 1, **kw))
        self.shift = nn.Parameter(torch.zeros(base.out_features, **kw))
        nn.init.kaiming_uniform_(self.scale_col)  # fan_in = d_in, as for the RLRR code's (1, d_in)
        nn.init.kaiming_uniform_(self.scale_row)  # fan_in = 1

    def forward(self, x: Tensor) -> Tensor:
        w = self.base.weight
        col = self.scale_col.repeat_interleave(w.shape[0] // self.col_groups, dim=0)
        bias = self.shift if self.base.bias is None else self.base.bias + self.shift
        return F.linear(x, w + w * (self.scale_row * col), bias)


class ScaleShift(nn.Module):
    """SSF-style ``base(x) * scale + shift`` on the last dim (used by RLRR after norms / patch embedding)."""

    # Table 7 RLRR baseline; init N(1, .02) / N(0, .02) as in the RLRR code.
    def __init__(self, base: nn.Module, dim: int, like: Tensor) -> None:
        super().__init__()
        kw = {"device": like.device, "dtype": like.dtype}
        self.base = _frozen(base)
        self.scale = nn.Parameter(torch.empty(dim, **kw))
        self.shift = nn.Parameter(torch.empty(dim, **kw))
        nn.init.normal_(self.scale, mean=1.0, std=0.02)
        nn.init.normal_(self.shift, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) * self.scale + self.shift


class PromptedBlocks(nn.Sequential):
    """Transformer blocks with VPT prompts (Jia et al. 2022) inserted after the prefix ([CLS]) tokens.

    Deep: a fresh set of ``n_tokens`` prompts replaces the previous ones before every block; shallow: prompts
    are inserted once before block 0.  Prompts are removed again after the last block, so the caller (norm,
    pooling, head) sees the usual token layout.  Child names stay ``0..L-1`` so base weights keep their keys.
    ``ViTTower.forward_blocks`` calls ``insert_prompts``/``remove_prompts`` itself; other timm paths that iterate
    blocks themselves (``attn_mask``, timm's grad checkpointing, intermediates) skip the prompts.
    """

    # Table 7 VPT baseline (Sec. 2.2).
    def __init__(
        self, blocks: nn.Sequential, dim: int, n_tokens: int, deep: bool, n_prefix: int, init_bound: float
    ) -> None:
        super().__init__(OrderedDict(blocks.named_children()))
        like = next(blocks.parameters())
        n_sets = len(blocks) if deep else 1
        self.deep, self.n_tokens, self.n_prefix = deep, n_tokens, n_prefix
        self.prompts = nn.Parameter(torch.empty(n_sets, n_tokens, dim, device=like.device, dtype=like.dtype))
        nn.init.uniform_(self.prompts, -init_bound, init_bound)

    def __getitem__(self, idx: slice | int) -> nn.Module:  # type: ignore[override]
        if isinstance(idx, slice):  # plain blocks, without prompts
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def insert_prompts(self, x: Tensor, i: int) -> Tensor:
        """The sequence entering block ``i``: (new) prompts after the prefix tokens (deep: every block)."""
        if i > 0 and not self.deep:
            return x
        keep_from = self.n_prefix + (self.n_tokens if i > 0 else 0)
        idx = i if self.deep else 0
        prompts = self.prompts[idx].unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, : self.n_prefix], prompts, x[:, keep_from:]], dim=1)

    def remove_prompts(self, x: Tensor) -> Tensor:
        return torch.cat([x[:, : self.n_prefix], x[:, self.n_prefix + self.n_tokens :]], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self):
            x = block(self.insert_prompts(x, i))
        return self.remove_prompts(x)


# --------------------------------------------------------------------------------------------- applying


def _head(model: nn.Module) -> nn.Module:
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return model.head


def _block_index(name: str) -> int | None:
    parts = name.split(".")
    if "blocks" in parts:
        i = parts.index("blocks")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _replace_linears(
    model: nn.Module,
    targets: Sequence[str],
    factory: Callable[[str, nn.Linear], nn.Module],
    blocks: Sequence[int] | None = None,
) -> int:
    """Replace every ``nn.Linear`` whose name ends with a target (and lies in ``blocks``, if given)."""
    found = [
        (name, m)
        for name, m in model.named_modules()
        if type(m) is nn.Linear
        and _matches(name, targets)
        and (blocks is None or _block_index(name) in blocks)
    ]
    if not found:
        raise ValueError(f"no nn.Linear in the model matches targets {list(targets)}")
    for name, m in found:
        _set_module(model, name, factory(name, m))
    return len(found)


def _n_blocks(model: nn.Module) -> int:
    return len(model.blocks)


def _no_targets(method: str, targets: Sequence[str] | None) -> None:
    if targets is not None:
        raise ValueError(f"method {method!r} does not take targets")


#: ``apply(model, targets, **kwargs)`` of every Table 7 method, filled by ``@register_peft`` (registration order)
PEFT_METHODS: Registry[Callable[..., None]] = Registry("PEFT method")
register_peft = PEFT_METHODS.register


@register_peft("linear_probe")
def _apply_linear_probe(model: nn.Module, targets: Sequence[str] | None) -> None:
    # Table 7 LP: nothing but the head trains
    _no_targets("linear_probe", targets)


@register_peft("full")
def _apply_full(model: nn.Module, targets: Sequence[str] | None) -> None:
    # Table 7 FPT: everything trains (apply_adapters leaves the model unfrozen)
    _no_targets("full", targets)


@register_peft("bitfit")
def _apply_bitfit(model: nn.Module, targets: Sequence[str] | None) -> None:
    # Table 7 BitFit baseline: every bias (incl. LayerNorm biases) is tuned.
    _no_targets("bitfit", targets)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.requires_grad_(True)


@register_peft("vpt")
def _apply_vpt(model: nn.Module, targets: Sequence[str] | None, n_tokens: int = 5, deep: bool = True) -> None:
    # Table 7 VPT baseline; 5 tokens x 12 layers (deep) reproduces its 49K.  Init bound as in the VPT code.
    _no_targets("vpt", targets)
    if not isinstance(model.blocks, nn.Sequential):
        raise TypeError("VPT needs model.blocks to be an nn.Sequential (timm VisionTransformer)")
    ph, pw = model.patch_embed.patch_size
    bound = math.sqrt(6.0 / (3 * ph * pw + model.embed_dim))
    model.blocks = PromptedBlocks(
        model.blocks, model.embed_dim, n_tokens, deep, model.num_prefix_tokens, bound
    )


def _wrap_linears(
    model: nn.Module, targets: Sequence[str] | None, layer: Callable[..., nn.Module], kwargs: dict[str, object]
) -> None:
    """Every ``nn.Linear`` matching ``targets`` (default ``mlp.fc1``/``mlp.fc2``) → ``layer(linear, **kwargs)``."""
    _replace_linears(model, targets or MLP_TARGETS, lambda _name, m: layer(m, **kwargs))


@register_peft("lora")
def _apply_lora(model: nn.Module, targets: Sequence[str] | None, **kwargs: object) -> None:
    _wrap_linears(model, targets, LoRALinear, kwargs)


@register_peft("loramoe")
def _apply_loramoe(model: nn.Module, targets: Sequence[str] | None, **kwargs: object) -> None:
    _wrap_linears(model, targets, LoRAMoELinear, kwargs)


@register_peft("mor")
def _apply_mor(model: nn.Module, targets: Sequence[str] | None, **kwargs: object) -> None:
    _wrap_linears(model, targets, MoRLinear, kwargs)


@register_peft("mor_nobypass")
def _apply_mor_nobypass(model: nn.Module, targets: Sequence[str] | None, **kwargs: object) -> None:
    _wrap_linears(model, targets, partial(MoRLinear, bypass=False), kwargs)


@register_peft("rlrr")
def _apply_rlrr(model: nn.Module, targets: Sequence[str] | None) -> None:
    # Table 7 RLRR baseline: rescaled linears + SSF after norm1/norm2/final norm and the patch embedding.
    _replace_linears(
        model, targets or RLRR_TARGETS, lambda name, m: RLRRLinear(m, 3 if name.endswith("qkv") else 1)
    )
    dim, like = model.embed_dim, model.pos_embed
    names = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) and _matches(n, BLOCK_NORMS)]
    names.append("norm" if isinstance(model.norm, nn.LayerNorm) else "fc_norm")
    names.append("patch_embed.norm")
    for name in names:
        _set_module(model, name, ScaleShift(model.get_submodule(name), dim, like))


@register_peft("latelora")
def _apply_latelora(
    model: nn.Module,
    targets: Sequence[str] | None,
    last_n_blocks: int = 6,
    r: int = 4,
    alpha: float = 8.0,
) -> None:
    # Table 7 LateLoRA (Teuber et al. 2025), inferred layout: LoRA on attention of the later blocks only.
    n = _n_blocks(model)
    late = range(max(0, n - last_n_blocks), n)
    _replace_linears(model, targets or ("attn.qkv",), lambda _name, m: LoRALinear(m, r, alpha), late)


METHODS: tuple[str, ...] = PEFT_METHODS.names()
#: the methods whose adapters are LoRA branches (``lora_zeroed`` switches them off)
LORA_FAMILY = frozenset({"lora", "loramoe", "mor", "mor_nobypass", "latelora"})


def apply_adapters(
    model: nn.Module, method: str, targets: Sequence[str] | None = None, **kwargs: object
) -> nn.Module:
    """Adapt ``model`` in place with a Table 7 method and set which parameters train; returns ``model``.

    ``targets``: module-name suffixes of the linears to wrap (None: the method's default, ``mlp.fc1`` and
    ``mlp.fc2`` for lora/loramoe/mor/mor_nobypass).  ``kwargs`` go to the layer (e.g. ``r``, ``alpha``,
    ``ranks``, ``n_experts``) or method (vpt: ``n_tokens``, ``deep``; latelora: ``last_n_blocks``).
    Everything except the new parameters is frozen (``full``: nothing is); the head always trains.
    """
    # Sec. 4.3.4 / Table 7: one entry point for all compared adaptation methods.
    apply = PEFT_METHODS.lookup(method)
    model.requires_grad_(method == "full")
    apply(model, targets, **kwargs)
    _head(model).requires_grad_(True)
    return model


# ------------------------------------------------------------------------------------ counting, saving


def _excluded(name: str, exclude: Sequence[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def _trainable(model: nn.Module, exclude: Sequence[str] = ()) -> Iterator[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad and not _excluded(n, exclude))


def count_trainable(model: nn.Module, exclude: Sequence[str] = ("head",)) -> int:
    """Number of trainable parameters, skipping those under the module prefixes in ``exclude``."""
    # Table 7 "Params." column (which counts the head: pass exclude=()).
    return sum(p.numel() for _, p in _trainable(model, exclude))


def adapter_state_dict(model: nn.Module, include_head: bool = True) -> dict[str, Tensor]:
    """The trainable state (adapters, routers, prompts, tuned biases, and the head unless excluded).

    Tensors are detached contiguous copies, ready for ``safetensors.torch.save_file``.
    """
    exclude = () if include_head else ("head",)
    return {n: p.detach().clone().contiguous() for n, p in _trainable(model, exclude)}


def _list(keys: set[str], limit: int = 10) -> str:
    shown = sorted(keys)[:limit]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more


def load_adapter_state_dict(model: nn.Module, state: dict[str, Tensor], include_head: bool = True) -> None:
    """Copy ``state`` (from :func:`adapter_state_dict`) into the trainable parameters of ``model``.

    ``model`` must already be adapted with the same method; raises :class:`AdapterStateError` naming every
    missing or unexpected key, or a shape mismatch.
    """
    params = dict(_trainable(model, () if include_head else ("head",)))
    missing, unexpected = set(params) - set(state), set(state) - set(params)
    if missing or unexpected:
        raise AdapterStateError(
            f"adapter state does not fit the model: missing keys [{_list(missing)}]; "
            f"unexpected keys [{_list(unexpected)}]"
        )
    for name, p in params.items():
        if p.shape != state[name].shape:
            raise AdapterStateError(
                f"adapter state key {name!r} has shape {tuple(state[name].shape)}, model has {tuple(p.shape)}"
            )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


@contextmanager
def lora_zeroed(model: nn.Module) -> Iterator[int]:
    """Inside the block every LoRA up-projection (``lora_B``: LoRA, LoRAMoE, MoR experts) of ``model`` is 0, so
    each adapted linear computes its frozen base alone (Eq. 4 with B_k = 0); restored on exit. Yields how many
    were zeroed; a model without LoRA branches is an error (nothing to zero)."""
    saved = [(p, p.detach().clone()) for n, p in model.named_parameters() if n.endswith("lora_B")]
    if not saved:
        raise AdapterStateError("the model has no LoRA branches (lora_B) to zero")
    with torch.no_grad():
        for p, _ in saved:
            p.zero_()
    try:
        yield len(saved)
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
