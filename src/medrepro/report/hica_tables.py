"""HiCA's result tables from the runs' test predictions, with seed-paired 95 % bootstrap intervals:

- ``hica_table1.csv`` (Table I): accuracy and AUC (macro, one-vs-rest) per dataset, labelled subset and method
  (``zeroshot``, ``cnn``, ``hica``); ``gap`` = method − HiCA on the same test samples and seeds;
- ``hica_table2.csv`` (Table II): HiCA and each loss ablation (``hica_no_global``, ``hica_no_local``,
  ``hica_no_cross``) on ``hica.ablation_subsets``; ``gap`` = ablation − HiCA.
"""

from __future__ import annotations

import pandas as pd

from medrepro import layout
from medrepro.config import Config
from medrepro.report.paired import paired_rows
from medrepro.train.hica import ABLATIONS, METHOD, method_name
from medrepro.train.hica_baselines import CNN, UNLABELLED, ZEROSHOT

METRICS = ("accuracy", "mAUC")  # the paper's accuracy and AUC
COLUMNS = ["dataset", "subset", "method", "seeds", "metric", "value", "gap", "ci_low", "ci_high"]


def _rows(cfg: Config, dataset: str, subset: str, methods: list[tuple[str, str]]) -> list[dict]:
    """``methods``: (name, the subset its run trained on); the reference is HiCA on ``subset``."""
    runs = [({"dataset": dataset, "subset": subset, "method": m}, layout.hica(dataset, m, s).predictions)
            for m, s in methods]
    reference = layout.hica(dataset, METHOD, subset).predictions
    return paired_rows(runs, reference, METRICS, cfg.seeds, cfg.report.n_boot, cfg.seed)


def table1(cfg: Config) -> pd.DataFrame:
    """Zero-shot, supervised CNN and HiCA per dataset and labelled subset."""
    rows = [r for d in cfg.hica.datasets for s in cfg.hica.subsets
            for r in _rows(cfg, d, s, [(ZEROSHOT, UNLABELLED), (CNN, s), (METHOD, s)])]
    return pd.DataFrame(rows, columns=COLUMNS)


def table2(cfg: Config) -> pd.DataFrame:
    """HiCA and each Eq. 2 term removed, per dataset and ablation subset."""
    rows = [r for d in cfg.hica.datasets for s in cfg.hica.ablation_subsets
            for r in _rows(cfg, d, s, [(METHOD, s)] + [(method_name(a), s) for a in ABLATIONS])]
    return pd.DataFrame(rows, columns=COLUMNS)
