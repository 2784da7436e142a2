"""Paired bootstrap of a metric gap between two models on the same test samples."""

from __future__ import annotations

import numpy as np
import pytest

from medrepro.metrics.classification import classification_metrics
from medrepro.report.bootstrap import paired_bootstrap, paired_bootstrap_seeds


def _scores(y: np.ndarray, skill: float, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(size=(len(y), 4))
    logits[np.arange(len(y)), y] += skill
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_identical_models_have_a_zero_gap() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    s = _scores(y, 1.0, rng)
    g = paired_bootstrap(y, s, s.copy(), resamples=50)
    assert g.gap == 0 and g.low == 0 and g.high == 0


@pytest.mark.slow
def test_better_model_has_an_interval_above_zero_and_the_full_set_gap() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    good, weak = _scores(y, 3.0, rng), _scores(y, 0.5, rng)
    g = paired_bootstrap(y, good, weak, resamples=200)
    full = classification_metrics(y, good)["mAP"] - classification_metrics(y, weak)["mAP"]
    assert g.gap == pytest.approx(full)
    assert 0 < g.low < g.gap < g.high
    swapped = paired_bootstrap(y, weak, good, resamples=200)
    assert swapped.high < 0 and swapped.gap == pytest.approx(-full)


@pytest.mark.slow
def test_interval_narrows_with_more_test_samples() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 2000)
    a, b = _scores(y, 1.2, rng), _scores(y, 1.0, rng)
    small = paired_bootstrap(y[:200], a[:200], b[:200], resamples=200)
    large = paired_bootstrap(y, a, b, resamples=200)
    assert (large.high - large.low) < 0.6 * (small.high - small.low)


def test_mismatched_shapes_are_an_error() -> None:
    y = np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="must match"):
        paired_bootstrap(y, np.ones((10, 4)), np.ones((9, 4)))


def test_seed_pooled_gap_is_the_mean_of_the_seeds_gaps_on_shared_resamples() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    a = [_scores(y, 2.0, rng) for _ in range(3)]
    b = [_scores(y, 1.0, rng) for _ in range(3)]
    one = paired_bootstrap(y, a[0], b[0], "mAUC", resamples=30, seed=5)
    assert paired_bootstrap_seeds(y, a[:1], b[:1], "mAUC", resamples=30, seed=5) == one
    pooled = paired_bootstrap_seeds(y, a, b, "mAUC", resamples=30, seed=5)
    per_seed = [classification_metrics(y, p)["mAUC"] - classification_metrics(y, q)["mAUC"]
                for p, q in zip(a, b, strict=True)]
    assert pooled.gap == pytest.approx(np.mean(per_seed))
    assert pooled.low <= pooled.gap <= pooled.high
    with pytest.raises(ValueError, match="one score array per seed"):
        paired_bootstrap_seeds(y, a, b[:2])
