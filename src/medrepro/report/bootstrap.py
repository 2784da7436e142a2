"""Paired bootstrap over test samples: how sure is a metric gap between two models scored on the same samples?

Each resample draws len(y) sample indices with replacement and scores both models on the same draw, so the
interval reflects only the test set's finite size (not seeds or training noise). Percentile interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrepro.metrics.classification import classification_metrics


@dataclass(frozen=True)
class PairedGap:
    """metric(a) − metric(b) on the full test set, and the bootstrap percentile interval of that difference."""

    gap: float
    low: float
    high: float
    resamples: int


def paired_bootstrap(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, metric: str = "mAP",
                     multilabel: bool = False, resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> PairedGap:
    """Gap metric(a) − metric(b) with a ``level`` percentile interval from ``resamples`` paired resamples."""
    if scores_a.shape != scores_b.shape or len(scores_a) != len(y):
        raise ValueError(f"scores {scores_a.shape} and {scores_b.shape} must match each other and y ({len(y)} rows)")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")

    def gap(idx: np.ndarray) -> float:
        a = classification_metrics(y[idx], scores_a[idx], multilabel)[metric]
        return a - classification_metrics(y[idx], scores_b[idx], multilabel)[metric]

    rng = np.random.default_rng(seed)
    draws = np.array([gap(rng.integers(0, len(y), len(y))) for _ in range(resamples)])
    tail = (1 - level) / 2
    low, high = np.nanquantile(draws, [tail, 1 - tail])
    return PairedGap(gap(np.arange(len(y))), float(low), float(high), resamples)
