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
from medrepro.metrics.classification import classification_metrics, per_class

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


def score_runs(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per run (seed, and modality for unimodal runs): run columns, ``test`` metrics and per-class."""
    keys = [c for c in ("seed", "modality") if c in df.columns]
    out = []
    for _, run in df.groupby(keys, sort=False):
        y, probs, multilabel = labels_and_scores(run)
        pc = per_class(y, probs, multilabel)
        first = run.iloc[0]
        out.append({**{c: first[c].item() if hasattr(first[c], "item") else first[c]
                       for c in RUN_COLUMNS if c in run.columns},
                    "test": classification_metrics(y, probs, multilabel),
                    "test_per_class": {k: v.tolist() for k, v in pc.items()}})
    return out


def scored_record(path: Path, **identity: Any) -> dict[str, Any]:
    """``identity`` (dataset, method, …) with the ``classes`` and the scored ``runs`` of one predictions file."""
    df = read_predictions(path)
    return {**identity, "classes": classes_of(df), "runs": score_runs(df)}


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
