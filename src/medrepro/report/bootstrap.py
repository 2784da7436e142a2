"""Paired bootstrap over test samples: how sure is a metric gap between two models scored on the same samples?

Each resample draws len(y) sample indices with replacement and scores both models on the same draw, so the
interval reflects the test set's finite size; with several training seeds the gap is their mean (seed-to-seed
noise then shrinks in the estimate but is not itself resampled). Percentile interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medrepro.metrics.classification import metric_value


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
    return paired_bootstrap_seeds(y, [scores_a], [scores_b], metric, multilabel, resamples, level, seed)


def paired_bootstrap_seeds(y: np.ndarray, scores_a: Sequence[np.ndarray], scores_b: Sequence[np.ndarray],
                           metric: str | Callable[[np.ndarray, np.ndarray], float] = "mAP", multilabel: bool = False,
                           resamples: int = 1000, level: float = 0.95, seed: int = 0) -> PairedGap:
    """Mean over training seeds of metric(a_s) − metric(b_s), paired by seed (a_s and b_s share seed s), with a
    percentile interval from test-sample resamples shared by every seed (all score the same test samples).
    ``metric``: a key of ``classification_metrics`` or a function (labels, scores) → float."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"need one score array per seed on each side, got {len(scores_a)} and {len(scores_b)}")
    for a, b in zip(scores_a, scores_b, strict=True):
        if a.shape != b.shape or len(a) != len(y):
            raise ValueError(f"scores {a.shape} and {b.shape} must match each other and y ({len(y)} rows)")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")

    score = metric if callable(metric) else (lambda t, p: metric_value(t, p, metric, multilabel))

    def gap(idx: np.ndarray) -> float:
        return float(np.mean([score(y[idx], a[idx]) - score(y[idx], b[idx])
                              for a, b in zip(scores_a, scores_b, strict=True)]))

    rng = np.random.default_rng(seed)
    draws = np.array([gap(rng.integers(0, len(y), len(y))) for _ in range(resamples)])
    tail = (1 - level) / 2
    low, high = np.nanquantile(draws, [tail, 1 - tail])
    return PairedGap(gap(np.arange(len(y))), float(low), float(high), resamples)
