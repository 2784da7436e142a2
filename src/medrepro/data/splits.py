"""Seeded training subsets: nested stratified real-data ratios and K-shot sets (``subsets.parquet``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medrepro.errors import DataError


def ratio_column(r: float) -> str:
    return f"ratio_{r:g}" if r != 1 else "ratio_1.0"


def shot_column(k: int) -> str:
    return f"shot_{k}"


def is_few_shot(subset: str) -> bool:
    """Whether ``subset`` is a K-shot column: its run may see K labelled images per class in all (HiCA Sec. IV-A),
    so it reads no validation labels (``medrepro.train.task.load_task``)."""
    return subset.startswith("shot_")


def strata(df: pd.DataFrame) -> pd.Series:
    """Stratum per sample: the class for multiclass, the label combination for multi-label."""
    if "labels" in df.columns:
        return df["labels"].map(lambda v: "".join(str(int(x)) for x in v))
    return df["label"].astype(str)


def make_subsets(manifest: pd.DataFrame, ratios: list[float], shots: list[int], seeds: list[int]) -> pd.DataFrame:
    """One row per (seed, train sample) with a boolean column per subset.

    Per seed and stratum the train samples are shuffled once; ratio r keeps the first max(1, round(r · n)) and K-shot
    the first K. Using one permutation makes the subsets nested (1 % ⊂ 10 % ⊂ 100 %, 1-shot ⊂ 5-shot ⊂ …) and keeps
    at least one sample per class in every ratio subset.
    """
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise DataError("manifest has no train split")
    for r in ratios:
        if not 0 < r <= 1:
            raise DataError(f"splits.ratios: {r} is not in (0, 1]")
    groups = strata(train)
    frames = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        rank = np.empty(len(train), dtype=np.int64)
        size = np.empty(len(train), dtype=np.int64)
        for g in sorted(groups.unique()):
            idx = np.flatnonzero(groups.to_numpy() == g)
            rank[rng.permutation(idx)] = np.arange(len(idx))
            size[idx] = len(idx)
        out = pd.DataFrame({"sample_id": train["sample_id"], "seed": seed})
        for r in sorted(ratios):
            out[ratio_column(r)] = rank < np.maximum(1, np.round(r * size))
        for k in sorted(shots):
            out[shot_column(k)] = rank < k
        frames.append(out)
    return pd.concat(frames, ignore_index=True)
