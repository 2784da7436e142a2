"""HiCA's result tables from the runs' test predictions, with seed-paired 95 % bootstrap intervals:

- ``hica_table1.csv`` (Table I): accuracy and AUC (macro, one-vs-rest) per dataset, labelled subset and method
  (``zeroshot``, ``cnn``, ``hica``); ``gap`` = method − HiCA on the same test samples and seeds;
- ``hica_table2.csv`` (Table II): HiCA and each loss ablation (``hica_no_global``, ``hica_no_local``,
  ``hica_no_cross``) on ``hica.ablation_subsets``; ``gap`` = ablation − HiCA.
- ``hica_table6.csv`` (Table VI): training seconds per epoch, training samples/s, test-split inference images/s
  and peak memory of every Table I method, from the runs' metrics JSONs (timings, so not from predictions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config
from medrepro.errors import DataError
from medrepro.io import read_json
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


TIMING_COLUMNS = ["dataset", "subset", "method", "seeds", "train_s_per_epoch", "train_samples_per_s",
                  "inference_images_per_s", "peak_mem_mb"]


def _timing(dataset: str, subset: str, method: str, run_subset: str) -> dict:
    path = layout.hica(dataset, method, run_subset).metrics
    if not path.is_file():
        raise DataError(f"run metrics missing: {path} (run the stage that trains {method} on {run_subset})")
    runs = read_json(path)["runs"]
    lacking = [k for k in ("train_s", "epochs_run", "inference_images_per_s") if k not in runs[0]]
    if lacking:
        raise DataError(f"{path} has no {lacking[0]!r}: it predates timing records (rerun its stage)")
    return {"dataset": dataset, "subset": subset, "method": method, "seeds": len(runs),
            "train_s_per_epoch": float(np.mean([r["train_s"] / max(r["epochs_run"], 1) for r in runs])),
            "train_samples_per_s": float(np.mean([r["samples_per_s"] for r in runs])),
            "inference_images_per_s": float(np.mean([r["inference_images_per_s"] for r in runs])),
            "peak_mem_mb": float(max(r["peak_mem_mb"] for r in runs))}


def table6(cfg: Config) -> pd.DataFrame:
    """Cost of every Table I method per dataset and labelled subset (the zero-shot run serves every subset)."""
    rows = [_timing(d, s, m, rs) for d in cfg.hica.datasets for s in cfg.hica.subsets
            for m, rs in ((ZEROSHOT, UNLABELLED), (CNN, s), (METHOD, s))]
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)
