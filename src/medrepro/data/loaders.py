"""Batches straight from the uint8 image cache, on tensors (no per-epoch decoding, no DataLoader workers)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medrepro.data.cache import open_cache
from medrepro.errors import DataError

#: normalisation used for randomly initialised towers; pretrained towers pass their own mean/std.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


@dataclass
class ModalityCache:
    frames: np.ndarray  # (T, H, W, C) uint8, in RAM or memory-mapped
    offsets: np.ndarray  # (N + 1,)


class CachedImages:
    """All modalities of one prepared dataset, indexed by manifest row.

    2-D samples yield (B, 3, H, W) float tensors; volumes yield (B, S, 3, H, W) with ``slices`` slices per sample,
    evenly spaced (inference) or jittered within each spacing interval (training; EI Sec. 4.1 / MRNet protocol).
    Grey images are repeated to 3 channels.
    """

    def __init__(self, root: Path, modalities: Sequence[str], volumetric: bool = False, slices: int = 4,
                 mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
                 in_memory: bool = True) -> None:
        self.modalities = list(modalities)
        self.volumetric = volumetric
        self.slices = slices
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self.cache: dict[str, ModalityCache] = {}
        for m in self.modalities:
            frames, offsets = open_cache(root, m)
            self.cache[m] = ModalityCache(np.array(frames) if in_memory else frames, offsets)

    @property
    def norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of [0, 1] pixels as (1, 3, 1, 1) tensors: what the batches are normalised with."""
        return self.mean / 255, self.std / 255

    def concat(self, other: CachedImages) -> CachedImages:
        """These samples followed by ``other``'s (same modalities, frame shape and normalisation): real data plus a
        synthetic set, indexed as one."""
        out = copy.copy(self)
        out.cache = {}
        for m in self.modalities:
            a, b = self.cache[m], other.cache[m]
            if a.frames.shape[1:] != b.frames.shape[1:]:
                raise DataError(f"{m}: frames of shape {b.frames.shape[1:]} cannot join frames of shape "
                                f"{a.frames.shape[1:]}")
            out.cache[m] = ModalityCache(np.concatenate([np.asarray(a.frames), np.asarray(b.frames)]),
                                         np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]))
        return out

    def frame_index(self, m: str, idx: np.ndarray, train: bool, gen: torch.Generator | None) -> np.ndarray:
        """Frame rows for samples ``idx``: (B,) for 2-D, (B, S) for volumes."""
        off = self.cache[m].offsets
        start, count = off[idx], off[idx + 1] - off[idx]
        if not self.volumetric:
            return start
        s = self.slices
        pos = (np.arange(s) + 0.5) / s  # uniform at inference
        if train:
            jitter = torch.rand((len(idx), s), generator=gen).numpy() - 0.5
            pos = np.clip(pos[None] + jitter / s, 0, 1 - 1e-6)
        return start[:, None] + np.minimum((pos * count[:, None]).astype(np.int64), count[:, None] - 1)

    def batch(self, idx: np.ndarray, train: bool = False,
              gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Normalised float batches per modality."""
        out = {}
        for m in self.modalities:
            rows = self.frame_index(m, np.asarray(idx), train, gen)
            x = torch.from_numpy(self.cache[m].frames[rows.reshape(-1)])  # (B·S, H, W, C)
            x = x.permute(0, 3, 1, 2).float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = (x - self.mean) / self.std
            out[m] = x.view(*rows.shape, *x.shape[1:]) if self.volumetric else x
        return out


def epoch_batches(indices: np.ndarray, batch_size: int, gen: torch.Generator, min_steps: int = 1,
                  shuffle: bool = True) -> Iterator[np.ndarray]:
    """Shuffled mini-batches over ``indices``; tiny subsets are repeated to give at least ``min_steps`` batches."""
    n = len(indices)
    reps = max(1, -(-min_steps * batch_size // max(n, 1))) if shuffle else 1
    order = np.concatenate([
        indices[torch.randperm(n, generator=gen).numpy()] if shuffle else indices for _ in range(reps)
    ])
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        if shuffle and len(chunk) < min(batch_size, n) and i > 0:
            break  # drop a ragged last batch when training
        yield chunk
