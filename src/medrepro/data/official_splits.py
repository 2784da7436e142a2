"""Seeded splits where a dataset's official split is missing or partial, plus image listing for the adapters.

:func:`assign_splits` gives held-out splits (val, test) to whole groups (patients) and stratifies by
class, so a patient never straddles two splits and every class keeps its share. The result depends only
on the *set* of (stratum, group) pairs and the seed, not on the order the archive listed files in.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from medrepro.errors import DataError, ParamsError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def _held_out_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Groups per held-out split for a stratum of ``n`` groups: round half up, at least 1 for every
    split with a positive fraction when the stratum can spare it, and never all of them (train keeps at
    least one group)."""
    counts = [math.floor(f * n + 0.5) for f in fractions]
    if n > len(fractions):
        counts = [max(c, 1) if f > 0 else 0 for c, f in zip(counts, fractions, strict=True)]
    while sum(counts) > max(n - 1, 0):
        counts[int(np.argmax(counts))] -= 1
    return counts


def assign_splits(n: int, fractions: Mapping[str, float], seed: int, *,
                  strata: Sequence[Hashable] | None = None, groups: Sequence[Hashable] | None = None,
                  rest: str = "train") -> np.ndarray:
    """Seeded, stratified, group-level split assignment of ``n`` samples; one split name per sample.

    ``fractions`` maps held-out split names to their share (e.g. ``{"val": 0.1, "test": 0.2}``),
    counted in groups; the remaining groups go to ``rest``. ``groups`` (default: every sample its own
    group) keeps a patient's images together; ``strata`` (default: one stratum) is the class. A group
    takes the stratum most of its samples have (ties: the smallest). Per stratum, groups are sorted,
    shuffled with one generator seeded by ``seed`` and dealt out to the held-out splits in the order of
    ``fractions``.
    """
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or total >= 1:
        raise ParamsError(f"split fractions {dict(fractions)} must be non-negative and sum to less than 1")
    strata_s = [str(s) for s in strata] if strata is not None else ["all"] * n
    groups_s = [str(g) for g in groups] if groups is not None else [str(i) for i in range(n)]
    if len(strata_s) != n or len(groups_s) != n:
        raise ValueError("strata and groups need one entry per sample")
    members: dict[str, Counter[str]] = defaultdict(Counter)
    for s, g in zip(strata_s, groups_s, strict=True):
        members[g][s] += 1
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for g, counts in members.items():
        by_stratum[min(counts, key=lambda s: (-counts[s], s))].append(g)
    rng = np.random.default_rng(seed)
    names, fracs = list(fractions), list(fractions.values())
    split_of: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        sorted_groups = sorted(by_stratum[stratum])
        order = [sorted_groups[i] for i in rng.permutation(len(sorted_groups))]
        start = 0
        for name, k in zip(names, _held_out_counts(len(order), fracs), strict=True):
            split_of.update((g, name) for g in order[start:start + k])
            start += k
        split_of.update((g, rest) for g in order[start:])
    return np.array([split_of[g] for g in groups_s], dtype=object)


def list_images(folder: Path, exclude: Callable[[Path], bool] | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted; skips hidden files (``.DS_Store``, macOS ``._*``
    forks), other file types and anything ``exclude`` rejects. A missing folder raises DataError."""
    if not folder.is_dir():
        raise DataError(f"expected image folder not found: {folder} (wrong or incomplete archive?)")
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        and not (exclude and exclude(p))
    )


def safe_id(text: str) -> str:
    """``text`` with every run of characters other than letters, digits, ``-`` and ``.`` replaced by ``_``
    (``"benign (1)"`` → ``"benign_1"``), usable as a file name and a sample id."""
    out = re.sub(r"[^0-9A-Za-z.-]+", "_", text).strip("_")
    if not out:
        raise DataError(f"cannot derive a sample id from {text!r}")
    return out
