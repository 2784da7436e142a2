"""Volumes (MRNet: B, S, C, H, W) as B·S images, and their per-slice outputs pooled back to one per sample."""

from __future__ import annotations

from torch import Tensor

SLICE_POOLS: tuple[str, ...] = ("mean", "max")


def pool_slices(x: Tensor, slices: int | None, mode: str) -> Tensor:
    """(B·S, …) → (B, …) by ``mode`` ('mean' | 'max') over the S slices of each sample; no-op if ``slices`` is None."""
    if slices is None:
        return x
    x = x.view(-1, slices, *x.shape[1:])
    if mode == "mean":
        return x.mean(1)
    if mode == "max":
        return x.amax(1)
    raise ValueError(f"slice pooling must be one of {SLICE_POOLS}, got {mode!r}")
