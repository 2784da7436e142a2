"""The conditions of a generator: class labels and t_mix token states (VAP-Diffusion Eq. 3: c and τ(y)), with the
null condition of classifier-free guidance (label and text dropped together, as upstream)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medrepro.diffusion.text import TextTower


@dataclass
class Conditions:
    """Per-sample labels and (optionally) text contexts; ``null_*`` is the unconditional input."""

    labels: torch.Tensor  # (N,) long
    null_class: int
    context: torch.Tensor | None = None  # (N, L, D)
    mask: torch.Tensor | None = None  # (N, L) bool, True = real token
    null_context: torch.Tensor | None = None  # (1, L, D): the empty text's states
    null_mask: torch.Tensor | None = None  # (1, L)

    def batch(self, idx: torch.Tensor, drop: torch.Tensor | None,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(labels, context, mask) of rows ``idx``; rows where ``drop`` is True get the null condition."""
        labels = self.labels[idx]
        if drop is not None:
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        if self.context is None:
            return labels.to(device), None, None
        ctx, mask = self.context[idx].float(), self.mask[idx]
        if drop is not None:
            ctx = torch.where(drop[:, None, None], self.null_context.float(), ctx)
            mask = torch.where(drop[:, None], self.null_mask, mask)
        return labels.to(device), ctx.to(device), mask.to(device)

    def null(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``n`` rows of the unconditional input."""
        labels = torch.full((n,), self.null_class, dtype=torch.long, device=device)
        if self.null_context is None:
            return labels, None, None
        return (labels, self.null_context.float().expand(n, -1, -1).to(device),
                self.null_mask.expand(n, -1).to(device))


def encode_conditions(labels: torch.Tensor, null_class: int, texts: Sequence[str] | None,
                      tower: TextTower | None) -> Conditions:
    """Conditions of ``labels`` and, for the VAPS variants, the token states of ``texts`` (encoded once)."""
    if texts is None or tower is None:
        return Conditions(labels=labels.long(), null_class=null_class)
    context, mask = tower.encode(list(texts))
    null_context, null_mask = tower.encode([""])
    return Conditions(labels=labels.long(), null_class=null_class, context=context, mask=mask,
                      null_context=null_context, null_mask=null_mask)
