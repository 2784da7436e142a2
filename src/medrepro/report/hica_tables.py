"""HiCA's result tables from the runs' test predictions, with seed-paired 95 % bootstrap intervals:

Every row: the method's value (mean over seeds), its std over seeds and its own 95 % test-bootstrap interval
(``report.paired.VALUE_COLUMNS``), then the gap and its paired interval.

- ``hica_table1.csv`` (Table I): accuracy and AUC (macro, one-vs-rest) per dataset, labelled subset and method
  (``zeroshot``: CLIP as shipped, ``cnn``, ``transfer``, ``hica``); ``gap`` = method − HiCA on the same test
  samples and seeds. On a K-shot subset every method sees K labelled images per class and nothing else labelled:
  no validation label, a fixed schedule whose last epoch is scored (``medrepro.train.task.load_task``);
- ``hica_table2.csv`` (Table II): HiCA and each loss ablation (``hica_no_global``, ``hica_no_local``,
  ``hica_no_cross``) on ``hica.ablation_subsets``; ``gap`` = ablation − HiCA.
- ``hica_table4.csv`` (Table IV): HiCA trained without ``hica.unseen.classes`` (``hica_unseen``) against the
  zero-shot baseline: accuracy on the test samples of the unseen classes (argmax over every class), their
  one-vs-rest AUC, and accuracy on the seen classes' samples; ``gap`` = zero-shot − HiCA. The supervised CNN and
  transfer baselines have no row (the paper's Table IV lists them without saying how): trained without the unseen
  class, their output for it only gets pushed down, so its accuracy is about 0 by construction
  (docs/hica.md).
- ``hica_table5.csv`` (Table V): HiCA on clean and on noisy descriptors (``hica.noise``: irrelevant words inserted
  at random word positions, or captions replaced by random ones) on ``hica.noise.subset``; ``gap`` = noisy − clean.
- ``hica_table6.csv`` (Table VI): training seconds per epoch, training samples/s, test-split inference images/s
  and peak memory of every Table I method, from the runs' metrics JSONs (timings, so not from predictions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config
from medrepro.errors import DataError
from medrepro.hica.methods import CNN, METHOD, TRANSFER, UNLABELLED, UNSEEN, ZEROSHOT, method_name
from medrepro.io import read_json
from medrepro.metrics.classification import per_class
from medrepro.report.paired import VALUE_COLUMNS, paired_rows

METRICS = ("accuracy", "mAUC")  # the paper's accuracy and AUC
COLUMNS = ["dataset", "subset", "method", "seeds", "metric", *VALUE_COLUMNS, "gap", "ci_low", "ci_high"]


def _rows(cfg: Config, dataset: str, subset: str, methods: list[tuple[str, str]]) -> list[dict]:
    """``methods``: (name, the subset its run trained on); the reference is HiCA on ``subset``."""
    runs = [({"dataset": dataset, "subset": subset, "method": m}, layout.hica(dataset, m, s).predictions)
            for m, s in methods]
    reference = layout.hica(dataset, METHOD, subset).predictions
    return paired_rows(runs, reference, METRICS, cfg.seeds, cfg.report.n_boot, cfg.seed)


def table1(cfg: Config) -> pd.DataFrame:
    """Zero-shot, supervised CNN and HiCA per dataset and labelled subset."""
    rows = [r for d in cfg.hica.datasets for s in cfg.hica.subsets
            for r in _rows(cfg, d, s, [(ZEROSHOT, UNLABELLED), (CNN, s), (TRANSFER, s), (METHOD, s)])]
    return pd.DataFrame(rows, columns=COLUMNS)


def table2(cfg: Config) -> pd.DataFrame:
    """HiCA and each Eq. 2 term removed, per dataset and ablation subset."""
    rows = [r for d in cfg.hica.datasets for s in cfg.hica.ablation_subsets
            for r in _rows(cfg, d, s, [(METHOD, s)] + [(method_name(a), s) for a in cfg.hica.ablations])]
    return pd.DataFrame(rows, columns=COLUMNS)


def table5(cfg: Config) -> pd.DataFrame:
    """HiCA with clean and with each kind of noisy descriptors, per dataset."""
    s = cfg.hica.noise["subset"]
    rows = [r for d in cfg.hica.datasets
            for r in _rows(cfg, d, s, [(METHOD, s)] + [(method_name(f"noise_{k}"), s)
                                                        for k in cfg.hica.noise["kinds"]])]
    return pd.DataFrame(rows, columns=COLUMNS)


def _class_accuracy(classes: list[int]):
    def fn(y: np.ndarray, scores: np.ndarray) -> float:
        rows = np.isin(y, classes)
        return float((scores[rows].argmax(1) == y[rows]).mean()) if rows.any() else float("nan")
    return fn


def _class_auc(classes: list[int]):
    def fn(y: np.ndarray, scores: np.ndarray) -> float:
        return float(np.nanmean(per_class(y, scores)["AUC"][classes]))
    return fn


def table4(cfg: Config) -> pd.DataFrame:
    """Unseen classes: ``hica_unseen`` (reference) and the zero-shot baseline per dataset."""
    from medrepro.data.manifest import load_manifest

    rows = []
    subset, held = cfg.hica.unseen["subset"], list(cfg.hica.unseen["classes"])
    for d in cfg.hica.unseen["datasets"]:
        names = list(load_manifest(layout.prepared(d))[1]["classes"])
        unseen = [names.index(c) for c in held if c in names]
        if len(unseen) != len(held):
            raise DataError(f"hica.unseen.classes {held} are not all classes of {d} ({', '.join(names)})")
        seen = [k for k in range(len(names)) if k not in unseen]
        metrics = [("accuracy_unseen", _class_accuracy(unseen)), ("AUC_unseen", _class_auc(unseen)),
                   ("accuracy_seen", _class_accuracy(seen))]
        hica = method_name(UNSEEN)
        runs = [({"dataset": d, "subset": s, "method": m, "unseen_classes": " ".join(held)},
                 layout.hica(d, m, s).predictions) for m, s in ((ZEROSHOT, UNLABELLED), (hica, subset))]
        rows += paired_rows(runs, layout.hica(d, hica, subset).predictions, metrics, cfg.seeds, cfg.report.n_boot,
                            cfg.seed)
    return pd.DataFrame(rows, columns=["dataset", "subset", "method", "unseen_classes", *COLUMNS[3:]])


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
            for m, rs in ((ZEROSHOT, UNLABELLED), (CNN, s), (TRANSFER, s), (METHOD, s))]
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)
