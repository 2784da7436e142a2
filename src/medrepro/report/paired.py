"""Result-table rows with intervals: each run's metric (mean over seeds, its std over seeds and its own 95 % test
bootstrap interval) and its gap to a reference run scored on the same test samples with the same seeds, with a
paired interval (``report.bootstrap.paired_bootstrap_seeds``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrepro.errors import DataError
from medrepro.report.bootstrap import paired_bootstrap_seeds, seed_summary
from medrepro.report.scores import seed_scores

Metric = str | tuple[str, Callable[[np.ndarray, np.ndarray], float]]
#: the columns of a run's own number in every table built from ``paired_rows``
VALUE_COLUMNS = ["value", "value_std", "value_ci_low", "value_ci_high"]


def paired_rows(runs: Sequence[tuple[Mapping[str, Any], Path]], reference: Path, metrics: Sequence[Metric],
                seeds: Sequence[int], resamples: int, boot_seed: int = 0) -> list[dict[str, Any]]:
    """One row per (run, metric): ``identity``, seeds, metric, value (mean over seeds), ``value_std`` (over seeds;
    empty for one seed), ``value_ci_low/_high`` (95 % interval over test resamples) and gap = run − reference with
    its paired 95 % interval (empty for the reference itself). A metric is a ``classification_metrics`` key or a
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
            # a metric name takes the vectorised resamples, a function the per-resample loop
            name, how = metric if isinstance(metric, tuple) else (metric, metric)
            run_scores = [scores[s] for s in seeds]
            own = seed_summary(y, run_scores, how, multilabel, resamples, seed=boot_seed)
            gap = None if Path(path) == Path(reference) else paired_bootstrap_seeds(
                y, run_scores, [ref[s] for s in seeds], how, multilabel, resamples, seed=boot_seed)
            rows.append({**identity, "seeds": len(seeds), "metric": name, "value": own.value, "value_std": own.std,
                         "value_ci_low": own.low, "value_ci_high": own.high,
                         "gap": None if gap is None else gap.gap, "ci_low": None if gap is None else gap.low,
                         "ci_high": None if gap is None else gap.high})
    return rows
