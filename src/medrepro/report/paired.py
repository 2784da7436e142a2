"""Result-table rows with a paired interval: each run's metric (mean over seeds) and its gap to a reference run
scored on the same test samples with the same seeds (``report.bootstrap.paired_bootstrap_seeds``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrepro.errors import DataError
from medrepro.metrics.classification import metric_value
from medrepro.report.bootstrap import paired_bootstrap_seeds
from medrepro.report.scores import seed_scores

Metric = str | tuple[str, Callable[[np.ndarray, np.ndarray], float]]


def paired_rows(runs: Sequence[tuple[Mapping[str, Any], Path]], reference: Path, metrics: Sequence[Metric],
                seeds: Sequence[int], resamples: int, boot_seed: int = 0) -> list[dict[str, Any]]:
    """One row per (run, metric): ``identity``, seeds, metric, value (mean over seeds) and gap = run − reference
    with its 95 % interval (empty for the reference itself). A metric is a ``classification_metrics`` key or a
    (name, function (labels, scores) → float) pair."""
    seeds = sorted(seeds)
    y, ref, multilabel = seed_scores(reference)
    rows = []
    for identity, path in runs:
        y_t, scores, _ = seed_scores(path)
        if not np.array_equal(y_t, y) or sorted(scores) != seeds or sorted(ref) != seeds:
            raise DataError(f"{path}: test samples or seeds differ from {reference}'s or from seeds {seeds} (rerun "
                            "both with these params)")
        for metric in metrics:
            name, fn = metric if isinstance(metric, tuple) else (
                metric, lambda t, p, m=metric: metric_value(t, p, m, multilabel))
            value = float(np.mean([fn(y, scores[s]) for s in seeds]))
            gap = None if Path(path) == Path(reference) else paired_bootstrap_seeds(
                y, [scores[s] for s in seeds], [ref[s] for s in seeds], fn if isinstance(metric, tuple) else metric,
                multilabel, resamples, seed=boot_seed)  # a metric name takes the vectorised resamples
            rows.append({**identity, "seeds": len(seeds), "metric": name, "value": value,
                         "gap": None if gap is None else gap.gap, "ci_low": None if gap is None else gap.low,
                         "ci_high": None if gap is None else gap.high})
    return rows
