"""Test scores of saved runs, computed from their predictions parquet (the training runner writes one per stage).

Every table reads these files, never the metrics JSONs (which also hold timings that change from run to run), so a
table stage depends only on what determines its numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrepro.errors import DataError
from medrepro.metrics.classification import METRICS, classification_metrics, per_class

#: columns that describe the run rather than a sample (constant within a run)
RUN_COLUMNS = ("seed", "modality", "n_real", "n_synthetic", "trainable_params")


def read_predictions(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DataError(f"test predictions missing: {path} (run the training stage that writes them)")
    return pd.read_parquet(path)


def classes_of(df: pd.DataFrame) -> list[str]:
    """Class names in score order (``score_<class>`` columns)."""
    return [c.removeprefix("score_") for c in df.columns if c.startswith("score_")]


def labels_and_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, bool]:
    """(labels, probabilities, multilabel) of the rows of ``df``: ``label`` (N,) or ``label_<class>`` (N, K)."""
    classes = classes_of(df)
    probs = df[[f"score_{c}" for c in classes]].to_numpy()
    if "label" in df.columns:
        return df["label"].to_numpy(), probs, False
    return df[[f"label_{c}" for c in classes]].to_numpy().astype(np.int64), probs, True


def score_runs(df: pd.DataFrame, resamples: int = 0) -> list[dict[str, Any]]:
    """One record per run (seed, and modality for unimodal runs): run columns, ``test`` metrics and per-class; with
    ``resamples``, ``test_ci`` {metric: [low, high]}: the 95 % bootstrap interval over test samples."""
    keys = [c for c in ("seed", "modality") if c in df.columns]
    out = []
    for _, run in df.groupby(keys, sort=False):
        y, probs, multilabel = labels_and_scores(run)
        pc = per_class(y, probs, multilabel)
        first = run.iloc[0]
        record = {**{c: first[c].item() if hasattr(first[c], "item") else first[c]
                     for c in RUN_COLUMNS if c in run.columns},
                  "test": classification_metrics(y, probs, multilabel),
                  "test_per_class": {k: v.tolist() for k, v in pc.items()}}
        if resamples:
            record["test_ci"] = {m: list(_interval(y, [probs], m, multilabel, resamples)[1:]) for m in METRICS}
        out.append(record)
    return out


def _seeds_per_group(df: pd.DataFrame) -> int:
    return int(df.groupby("modality")["seed"].nunique().max() if "modality" in df.columns else df["seed"].nunique())


def mean_intervals(df: pd.DataFrame, resamples: int) -> dict[str | None, dict[str, list[float]]]:
    """Per modality (None for a multimodal file): {metric: [mean over seeds, low, high]}, the interval from test
    resamples shared by the seeds (they score the same samples)."""
    groups = df.groupby("modality", sort=False) if "modality" in df.columns else [(None, df)]
    out: dict[str | None, dict[str, list[float]]] = {}
    for modality, part in groups:
        y, by_seed, multilabel = aligned_seeds(part, f"predictions of {modality or 'the run'}")
        scores = list(by_seed.values())
        out[modality] = {m: list(_interval(y, scores, m, multilabel, resamples)) for m in METRICS}
    return out


def _interval(y: np.ndarray, scores: list[np.ndarray], metric: str, multilabel: bool,
              resamples: int) -> tuple[float, float, float]:
    from medrepro.report.bootstrap import bootstrap_interval

    iv = bootstrap_interval(y, scores, metric, multilabel, resamples)
    return iv.value, iv.low, iv.high


def scored_record(path: Path, resamples: int = 0, **identity: Any) -> dict[str, Any]:
    """``identity`` (dataset, method, …) with the ``classes`` and the scored ``runs`` of one predictions file; with
    ``resamples``, each run's ``test_ci`` and the seed mean's ``mean_ci`` (``mean_intervals``)."""
    df = read_predictions(path)
    if not resamples:
        return {**identity, "classes": classes_of(df), "runs": score_runs(df)}
    mean_ci = mean_intervals(df, resamples)
    if _seeds_per_group(df) > 1:
        runs = score_runs(df, resamples)
    else:  # one seed: its run's interval is the mean's (same resamples), not computed twice
        runs = score_runs(df)
        for run in runs:
            run["test_ci"] = {m: v[1:] for m, v in mean_ci[run.get("modality")].items()}
    return {**identity, "classes": classes_of(df), "runs": runs, "mean_ci": mean_ci}


def seed_scores(path: Path) -> tuple[np.ndarray, dict[int, np.ndarray], bool]:
    """(test labels, {seed: scores} in one sample order, multilabel) of one predictions file."""
    return aligned_seeds(read_predictions(path), str(path))


def aligned_seeds(df: pd.DataFrame, where: str) -> tuple[np.ndarray, dict[int, np.ndarray], bool]:
    """(test labels, {seed: scores} in one sample order, multilabel) of the runs in ``df``; every seed must have
    scored the same test samples (``where`` names the data in the error)."""
    df = df.sort_values(["seed", "sample_id"], kind="stable")
    by_seed = {int(s): run for s, run in df.groupby("seed", sort=True)}
    if len({tuple(run["sample_id"]) for run in by_seed.values()}) != 1:
        raise DataError(f"{where}: the seeds scored different test samples")
    y, _, multilabel = labels_and_scores(next(iter(by_seed.values())))
    return y, {s: labels_and_scores(run)[1] for s, run in by_seed.items()}, multilabel
