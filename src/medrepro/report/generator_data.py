"""results/tables/vap_generator_data.csv: how much of the synthetic-data gain comes from the generator having seen
more real images than the downstream model?

For each dataset, downstream method and real ratio r of ``synthesis.generator_data.ratios``, three runs on the same
ratio-r real subset are compared on the test split: ``real`` alone; ``real + syn`` from the generator trained on
``diffusion.train_subset`` (the table3 row: the paper's Table 3 most plausibly trained its generator on all real
training images); and ``real + syn`` from the same variant trained on the ratio-r subset only. Gains are paired by
seed with a test-sample bootstrap interval (``report.bootstrap.paired_bootstrap_seeds``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config, generator_id, train_data_of
from medrepro.data.splits import ratio_column
from medrepro.errors import DataError
from medrepro.metrics.classification import classification_metrics
from medrepro.report.bootstrap import paired_bootstrap_seeds
from medrepro.report.scores import labels_and_scores, read_predictions

COLUMNS = ["dataset", "method", "real_ratio", "train_data", "generator_subset", "generator_real_images", "seeds",
           "metric", "value", "gain_vs_real", "gain_ci_low", "gain_ci_high"]


def seed_scores(path: Path) -> tuple[np.ndarray, dict[int, np.ndarray], bool]:
    """(test labels, {seed: scores} in one sample order, multilabel) of one predictions file."""
    df = read_predictions(path).sort_values(["seed", "sample_id"], kind="stable")
    by_seed = {int(s): run for s, run in df.groupby("seed", sort=True)}
    ids = [tuple(run["sample_id"]) for run in by_seed.values()]
    if len(set(ids)) != 1:
        raise DataError(f"{path}: the seeds scored different test samples")
    first = next(iter(by_seed.values()))
    y, _, multilabel = labels_and_scores(first)
    return y, {s: labels_and_scores(run)[1] for s, run in by_seed.items()}, multilabel


def real_images_seen(dataset: str, subset: str, seeds: Iterable[int]) -> int:
    """Real training images in ``subset`` (mean over seeds, rounded: the nested subsets differ by at most one)."""
    sub = pd.read_parquet(layout.subsets(dataset))
    return int(round(np.mean([sub.loc[sub["seed"] == s, subset].sum() for s in seeds])))


def generator_data_rows(cfg: Config, dataset: str, method: str, ratio: float, metric: str,
                        resamples: int) -> list[dict[str, Any]]:
    """The three rows (real, real + syn of the train_subset generator, real + syn of the ratio-subset generator)."""
    variant, subset = cfg.synthesis.generator_data.variant, ratio_column(ratio)
    runs = [("real", None), (train_data_of(variant), cfg.diffusion.train_subset),
            (train_data_of(generator_id(variant, subset)), subset)]
    scored = {t: seed_scores(layout.downstream(dataset, method, t, ratio).predictions) for t, _ in runs}
    y, real, multilabel = scored["real"]
    rows = []
    for train_data, gen_subset in runs:
        y_t, scores, _ = scored[train_data]
        seeds = sorted(cfg.seeds)
        if not np.array_equal(y_t, y) or sorted(scores) != seeds or sorted(real) != seeds:
            raise DataError(f"{layout.downstream(dataset, method, train_data, ratio).predictions}: test samples or "
                            f"seeds differ from the real run's or from seeds {seeds} (rerun both with these params)")
        if train_data == "real":
            gain = None
        else:
            gain = paired_bootstrap_seeds(y, [scores[s] for s in seeds], [real[s] for s in seeds], metric,
                                          multilabel, resamples, seed=cfg.seed)
        value = float(np.mean([classification_metrics(y, scores[s], multilabel)[metric] for s in seeds]))
        rows.append({"dataset": dataset, "method": method, "real_ratio": ratio, "train_data": train_data,
                     "generator_subset": gen_subset,
                     "generator_real_images": None if gen_subset is None else real_images_seen(dataset, gen_subset,
                                                                                               seeds),
                     "seeds": len(seeds), "metric": metric, "value": value,
                     "gain_vs_real": None if gain is None else gain.gap,
                     "gain_ci_low": None if gain is None else gain.low,
                     "gain_ci_high": None if gain is None else gain.high})
    return rows


def generator_data_table(cfg: Config, resamples: int = 1000) -> pd.DataFrame:
    """Every (dataset, downstream method, ratio of synthesis.generator_data.ratios) in the headline metric."""
    metric = cfg.report.headline_metric
    rows = [row for d in cfg.datasets for m in cfg.downstream.methods for r in cfg.synthesis.generator_data.ratios
            for row in generator_data_rows(cfg, d, m, r, metric, resamples)]
    return pd.DataFrame(rows, columns=COLUMNS)
