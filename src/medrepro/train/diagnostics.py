"""Is a mechanism alive? Per parameter group: how far training moved it, and how much gradient each loss term sends.

Groups are named sets of parameters chosen by a predicate on the parameter's name (``DEFAULT_GROUPS``: LoRA A and
B matrices, MoR/LoRAMoE routers, EI's [INT] adapters, gate and heads), so the same helpers serve a bare adapted ViT
and a whole EI network. Used by the capability tests and the ``mechanisms`` diagnosis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_GROUPS",
    "GroupChange",
    "Groups",
    "Snapshot",
    "grad_norms",
    "grad_norms_per_term",
    "group_params",
    "relative_change",
    "snapshot",
]

#: a group is a predicate on the parameter name, or a substring the name must contain
Groups = Mapping[str, Callable[[str], bool] | str]
#: group → parameter name → a detached copy of its value
Snapshot = dict[str, dict[str, Tensor]]


def _is_head(name: str) -> bool:
    return name.startswith("head.") or ".head." in name


DEFAULT_GROUPS: dict[str, Callable[[str], bool] | str] = {
    "lora_A": "lora_A",  # LoRA / MoR / LoRAMoE down-projections (kaiming init)
    "lora_B": "lora_B",  # up-projections (zero init: the update B A x is 0 at the start)
    "router": ".router.",  # MoR / LoRAMoE routers (Eq. 4), bypass column included
    "int_adapter": lambda n: n.startswith("int_adapters."),  # EI [INT] adapters (Eq. 1)
    "gate": lambda n: n.startswith("gate."),  # EI gating (Eq. 3)
    "head": _is_head,  # classifier heads
}


def _matcher(rule: Callable[[str], bool] | str) -> Callable[[str], bool]:
    return (lambda n: rule in n) if isinstance(rule, str) else rule


def group_params(model: nn.Module, groups: Groups = DEFAULT_GROUPS,
                 trainable_only: bool = True) -> dict[str, dict[str, nn.Parameter]]:
    """group → {parameter name → parameter} (a parameter may sit in several groups; a group may be empty)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    return {g: {n: p for n, p in named if _matcher(rule)(n)} for g, rule in groups.items()}


def snapshot(model: nn.Module, groups: Groups = DEFAULT_GROUPS) -> Snapshot:
    """Detached copies of every trainable parameter of each group (call before training)."""
    return {g: {n: p.detach().clone() for n, p in ps.items()} for g, ps in group_params(model, groups).items()}


@dataclass(frozen=True)
class GroupChange:
    """How far a group moved: ``change`` = ‖θ − θ0‖ / ‖θ0‖, or ‖θ − θ0‖ itself when ``absolute`` (θ0 = 0)."""

    change: float
    absolute: bool
    init_norm: float
    norm: float


def _norm(tensors: list[Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


def relative_change(model: nn.Module, snap: Snapshot) -> dict[str, GroupChange]:
    """Per group of ``snap``: the relative change ‖θ − θ0‖ / ‖θ0‖ of its parameters taken together.

    A zero-initialised group (LoRA B: ‖θ0‖ = 0, so no ratio exists) reports the absolute norm ‖θ − θ0‖ = ‖θ‖
    instead, with ``absolute=True``; an empty group reports 0.
    """
    params = dict(model.named_parameters())
    out: dict[str, GroupChange] = {}
    for g, saved in snap.items():
        missing = sorted(set(saved) - set(params))
        if missing:
            raise KeyError(f"snapshot group {g!r} names parameters the model lacks: {missing[:3]}")
        now = [params[n].detach() for n in saved]
        init = list(saved.values())
        delta = _norm([a - b.to(a.device) for a, b in zip(now, init, strict=True)])
        n0 = _norm(init)
        absolute = n0 == 0.0
        out[g] = GroupChange(delta if absolute else delta / n0, absolute, n0, _norm(now))
    return out


def grad_norms(model: nn.Module, groups: Groups = DEFAULT_GROUPS) -> dict[str, float]:
    """Per group: the norm of the gradients now in ``.grad`` (after ``backward``; a parameter without one counts 0)."""
    return {g: _norm([p.grad for p in ps.values() if p.grad is not None])
            for g, ps in group_params(model, groups).items()}


def grad_norms_per_term(model: nn.Module, terms: Mapping[str, Tensor],
                        groups: Groups = DEFAULT_GROUPS) -> dict[str, dict[str, float]]:
    """term → group → ‖∂term/∂θ_group‖: the gradient each loss term alone sends into each parameter group.

    ``terms`` are scalar losses still attached to their graph (e.g. ``EINetwork.loss_terms``; weight a term by its
    λ to see what the total receives from it). Uses ``torch.autograd.grad`` with ``retain_graph`` (``.grad`` is left
    untouched); a group the term does not reach, or a term without a graph (a constant 0), gets 0.
    """
    by_group = group_params(model, groups)
    names = sorted({n for ps in by_group.values() for n in ps})
    params = dict(model.named_parameters())
    out: dict[str, dict[str, float]] = {}
    for key, term in terms.items():
        if term.ndim != 0:
            raise ValueError(f"loss term {key!r} must be a scalar, got shape {tuple(term.shape)}")
        if term.requires_grad and names:
            grads = torch.autograd.grad(term, [params[n] for n in names], retain_graph=True, allow_unused=True)
        else:
            grads = (None,) * len(names)
        grad = {n: g for n, g in zip(names, grads, strict=True) if g is not None}
        out[key] = {g: _norm([grad[n] for n in ps if n in grad]) for g, ps in by_group.items()}
    return out
