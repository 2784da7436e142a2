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
from medrepro.metrics.resampled import resample_counts, resampled_metric


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
    _check(resamples, level)
    if isinstance(metric, str):  # every resample at once (medrepro.metrics.resampled)
        counts = resample_counts(len(y), resamples, seed)
        draws = np.mean([resampled_metric(y, a, metric, multilabel, counts)
                         - resampled_metric(y, b, metric, multilabel, counts)
                         for a, b in zip(scores_a, scores_b, strict=True)], 0)
        value = float(np.mean([metric_value(y, a, metric, multilabel) - metric_value(y, b, metric, multilabel)
                               for a, b in zip(scores_a, scores_b, strict=True)]))
        return PairedGap(value, *_percentiles(draws, level), resamples)

    def gap(idx: np.ndarray) -> float:
        return float(np.mean([metric(y[idx], a[idx]) - metric(y[idx], b[idx])
                              for a, b in zip(scores_a, scores_b, strict=True)]))

    value, low, high = _percentile_interval(gap, len(y), resamples, level, seed)
    return PairedGap(value, low, high, resamples)


@dataclass(frozen=True)
class Interval:
    """A metric (mean over seeds) on the full test set and its bootstrap percentile interval."""

    value: float
    low: float
    high: float


def bootstrap_interval(y: np.ndarray, scores: Sequence[np.ndarray], metric: str = "mAP", multilabel: bool = False,
                       resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean over training seeds of ``metric`` (a ``classification_metrics`` key) with a percentile interval from
    test-sample resamples shared by every seed: how sure the number is, given the finite test set."""
    if not scores or any(len(s) != len(y) for s in scores):
        raise ValueError(f"need one score array per seed, each with {len(y)} rows")
    _check(resamples, level)
    counts = resample_counts(len(y), resamples, seed)
    draws = np.mean([resampled_metric(y, s, metric, multilabel, counts) for s in scores], 0)
    value = float(np.mean([metric_value(y, s, metric, multilabel) for s in scores]))
    return Interval(value, *_percentiles(draws, level))


def value_interval(y: np.ndarray, scores: Sequence[np.ndarray], metric: Callable[[np.ndarray, np.ndarray], float],
                   resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """``bootstrap_interval`` for a metric given as a function (labels, scores) → float (no resampled form): the
    same index draws as ``paired_bootstrap_seeds`` with that ``seed``."""
    if not scores or any(len(s) != len(y) for s in scores):
        raise ValueError(f"need one score array per seed, each with {len(y)} rows")
    _check(resamples, level)
    value, low, high = _percentile_interval(
        lambda idx: float(np.mean([metric(y[idx], s[idx]) for s in scores])), len(y), resamples, level, seed)
    return Interval(value, low, high)


@dataclass(frozen=True)
class SeedSummary:
    """A run's number: the metric of each seed and the 95 % test-bootstrap interval of their mean."""

    per_seed: tuple[float, ...]
    low: float
    high: float

    @property
    def value(self) -> float:
        return float(np.mean(self.per_seed))

    @property
    def std(self) -> float | None:
        """Over seeds; None for one seed."""
        return float(np.std(self.per_seed, ddof=1)) if len(self.per_seed) > 1 else None


def seed_summary(y: np.ndarray, scores: Sequence[np.ndarray],
                 metric: str | Callable[[np.ndarray, np.ndarray], float], multilabel: bool = False,
                 resamples: int = 1000, seed: int = 0) -> SeedSummary:
    """``metric`` (a ``classification_metrics`` key, or a function (labels, scores) → float) of each seed's scores
    and the interval of their mean (``bootstrap_interval`` or ``value_interval``)."""
    if isinstance(metric, str):
        per_seed = tuple(metric_value(y, s, metric, multilabel) for s in scores)
        iv = bootstrap_interval(y, scores, metric, multilabel, resamples, seed=seed)
    else:
        per_seed = tuple(float(metric(y, s)) for s in scores)
        iv = value_interval(y, scores, metric, resamples, seed=seed)
    return SeedSummary(per_seed, iv.low, iv.high)


def _check(resamples: int, level: float) -> None:
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The ``level`` percentile interval of the draws (NaN draws, e.g. a class absent from a resample, left out)."""
    tail = (1 - level) / 2
    low, high = np.nanquantile(draws, [tail, 1 - tail])
    return float(low), float(high)


def _percentile_interval(stat: Callable[[np.ndarray], float], n: int, resamples: int, level: float,
                         seed: int) -> tuple[float, float, float]:
    """``stat`` on all n samples and its interval over ``resamples`` draws of n indices with replacement (for a
    metric given as a function, which has no resampled form)."""
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)])
    return stat(np.arange(n)), *_percentiles(draws, level)
