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


def pool_tokens(context: torch.Tensor, mask: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the real token states in consecutive windows of ``window`` tokens (a window without a real token is
    padding). ``window`` 1 leaves the states as they are (upstream: every token state is a context token)."""
    if window == 1:
        return context, mask
    n, length, dim = context.shape
    pad = -length % window
    ctx = torch.nn.functional.pad(context * mask[..., None], (0, 0, 0, pad)).view(n, -1, window, dim)
    m = torch.nn.functional.pad(mask, (0, pad)).view(n, -1, window)
    count = m.sum(-1, keepdim=True)
    return ctx.sum(2) / count.clamp(min=1), count[..., 0] > 0


def encode_conditions(labels: torch.Tensor, null_class: int, texts: Sequence[str] | None,
                      tower: TextTower | None, pool: int = 1) -> Conditions:
    """Conditions of ``labels`` and, for the VAPS variants, the token states of ``texts`` (encoded once, pooled in
    windows of ``pool`` tokens)."""
    if texts is None or tower is None:
        return Conditions(labels=labels.long(), null_class=null_class)
    context, mask = pool_tokens(*tower.encode(list(texts)), pool)
    null_context, null_mask = pool_tokens(*tower.encode([""]), pool)
    return Conditions(labels=labels.long(), null_class=null_class, context=context, mask=mask,
                      null_context=null_context, null_mask=null_mask)
