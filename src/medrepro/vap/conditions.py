"""The conditions of a generator: class labels and t_mix token states (VAP-Diffusion Eq. 3: c and τ(y)), with the
null condition of classifier-free guidance (label and text dropped together, as upstream).

Token states never sit in RAM for every text at once (256 × 768 float32 states are 0.79 MB a caption): training
encodes them once into a float16 file read row by row per batch (``DiskContexts``, as upstream pre-extracts its text
features), sampling encodes each batch's texts when it is drawn (``EncodedPerBatch``: every text is used once).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from medrepro.errors import DataError
from medrepro.models.text import TextTower


class ContextRows:
    """Token states (N, L, D) and masks (N, L) of N texts, handed out by rows."""

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class DiskContexts(ContextRows):
    """float16 states in a raw file (row-major (N, L, D)), read with ``pread`` per batch, so they are neither held
    nor mapped into the process's memory; masks in RAM (N × L bytes). The file stays open until ``close`` (or
    garbage collection), so the disk space of a deleted file comes back then."""

    def __init__(self, path: Path, mask: torch.Tensor, dim: int) -> None:
        self.path, self.mask, self.dim = Path(path), mask, dim
        self.row_bytes = mask.shape[1] * dim * 2
        self._file: BinaryIO | None = None

    def __len__(self) -> int:
        return len(self.mask)

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)  # closed by close(), or when collected
        length = self.mask.shape[1]
        out = np.empty((len(idx), length, self.dim), dtype=np.float16)
        for j, i in enumerate(idx.tolist()):
            out[j] = np.frombuffer(os.pread(self._file.fileno(), self.row_bytes, i * self.row_bytes),
                                   dtype=np.float16).reshape(length, self.dim)
        return torch.from_numpy(out), self.mask[idx]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EncodedPerBatch(ContextRows):
    """States encoded by ``tower`` (on its device) when the rows are asked for."""

    def __init__(self, tower: TextTower, texts: Sequence[str], pool: int) -> None:
        self.tower, self.texts, self.pool = tower, list(texts), pool

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pool_tokens(*self.tower.encode([self.texts[i] for i in idx.tolist()]), self.pool)


@dataclass
class Conditions:
    """Per-sample labels and (optionally) text contexts; ``null_*`` is the unconditional input."""

    labels: torch.Tensor  # (N,) long
    null_class: int
    context: torch.Tensor | ContextRows | None = None  # (N, L, D), or rows read/encoded per batch
    mask: torch.Tensor | None = None  # (N, L) bool, True = real token (None: ``context`` gives the masks)
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
        if isinstance(self.context, ContextRows):
            ctx, mask = self.context.rows(idx)
        else:
            ctx, mask = self.context[idx], self.mask[idx]
        ctx = ctx.float()
        if drop is not None:
            keep = drop.to(ctx.device)
            ctx = torch.where(keep[:, None, None], self.null_context.float().to(ctx.device), ctx)
            mask = torch.where(keep[:, None], self.null_mask.to(mask.device), mask)
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


def write_contexts(tower: TextTower, texts: Sequence[str], pool: int, path: Path,
                   chunk: int = 256) -> DiskContexts:
    """Encode ``texts`` (on the tower's device, ``chunk`` at a time) into float16 rows at ``path`` (overwritten)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    masks, dim = [], tower.dim
    with open(path, "wb") as f:
        for i in range(0, len(texts), chunk):
            states, mask = pool_tokens(*tower.encode(list(texts[i:i + chunk])), pool)
            half = states.to("cpu", torch.float16)
            if not torch.isfinite(half).all():
                raise DataError(f"text tower states overflow float16 (|x| > 65504) while writing {path}")
            f.write(half.numpy().tobytes())
            masks.append(mask.cpu())
    return DiskContexts(path, torch.cat(masks), dim)


def encode_conditions(labels: torch.Tensor, null_class: int, texts: Sequence[str] | None,
                      tower: TextTower | None, pool: int = 1, store: Path | None = None) -> Conditions:
    """Conditions of ``labels`` and, for the VAPS variants, the token states of ``texts`` pooled in windows of
    ``pool`` tokens: encoded once into the float16 file ``store`` (training: every text is drawn many times), or
    per batch when ``store`` is None (sampling: every text is drawn once)."""
    if texts is None or tower is None:
        return Conditions(labels=labels.long(), null_class=null_class)
    context = EncodedPerBatch(tower, texts, pool) if store is None else write_contexts(tower, texts, pool, store)
    null_context, null_mask = pool_tokens(*tower.encode([""]), pool)
    return Conditions(labels=labels.long(), null_class=null_class, context=context,
                      null_context=null_context.cpu(), null_mask=null_mask.cpu())
