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
from typing import Any

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config
from medrepro.data.splits import ratio_column
from medrepro.report.paired import VALUE_COLUMNS, paired_rows

COLUMNS = ["dataset", "method", "real_ratio", "train_data", "generator_subset", "generator_real_images", "seeds",
           "metric", *VALUE_COLUMNS, "gain_vs_real", "gain_ci_low", "gain_ci_high"]


def real_images_seen(dataset: str, subset: str, seeds: Iterable[int]) -> int:
    """Real training images in ``subset`` (mean over seeds, rounded: the nested subsets differ by at most one)."""
    sub = pd.read_parquet(layout.subsets(dataset))
    return int(round(np.mean([sub.loc[sub["seed"] == s, subset].sum() for s in seeds])))


def generator_data_rows(cfg: Config, dataset: str, method: str, ratio: float, metric: str,
                        resamples: int) -> list[dict[str, Any]]:
    """The three rows (real, real + syn of the train_subset generator, real + syn of the ratio-subset generator)."""
    variant, subset = cfg.synthesis.generator_data.variant, ratio_column(ratio)
    runs = [("real", None), (layout.train_data_of(variant), cfg.diffusion.train_subset),
            (layout.train_data_of(layout.generator_id(variant, subset)), subset)]
    identity = [({"dataset": dataset, "method": method, "real_ratio": ratio, "train_data": t,
                  "generator_subset": g,
                  "generator_real_images": None if g is None else real_images_seen(dataset, g, cfg.seeds)},
                 layout.downstream(dataset, method, t, ratio).predictions) for t, g in runs]
    rows = paired_rows(identity, identity[0][1], [metric], cfg.seeds, resamples, cfg.seed)
    return [{**r, "gain_vs_real": r.pop("gap"), "gain_ci_low": r.pop("ci_low"), "gain_ci_high": r.pop("ci_high")}
            for r in rows]


def generator_data_table(cfg: Config, resamples: int = 1000) -> pd.DataFrame:
    """Every (dataset, downstream method, ratio of synthesis.generator_data.ratios) in the headline metric."""
    metric = cfg.report.headline_metric
    rows = [row for d in cfg.datasets for m in cfg.downstream.methods for r in cfg.synthesis.generator_data.ratios
            for row in generator_data_rows(cfg, d, m, r, metric, resamples)]
    return pd.DataFrame(rows, columns=COLUMNS)
