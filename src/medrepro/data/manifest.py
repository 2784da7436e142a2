"""The prepared-dataset manifest: validation, reading and writing (its columns below)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medrepro.data.registry import DatasetInfo
from medrepro.errors import DataError

MANIFEST = "manifest.parquet"
CLASSES_JSON = "classes.json"
SPLITS = ("train", "val", "test")


def validate_manifest(df: pd.DataFrame, info: DatasetInfo, root: Path, source: str) -> pd.DataFrame:
    """Check columns, splits, labels and that every referenced file exists; return the canonical frame.

    ``source`` names the label file the rows came from, so that errors point at it.
    """
    label_col = "labels" if info.task == "multilabel" else "label"
    required = ["sample_id", "patient_id", "split", label_col] + [f"path_{m}" for m in info.modalities]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise DataError(f"{source}: no samples")
    if df["sample_id"].duplicated().any():
        dup = df.loc[df["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise DataError(f"{source}: duplicate sample_id {dup!r}")
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise DataError(f"{source}: unknown split value(s) {bad_split}")
    k = len(info.classes)
    if info.task == "multiclass":
        if df["label"].isna().any():
            sid = df.loc[df["label"].isna(), "sample_id"].iloc[0]
            raise DataError(f"{source}: missing label for sample {sid!r}")
        bad = ~df["label"].astype(int).between(0, k - 1)
        if bad.any():
            raise DataError(f"{source}: label out of range 0..{k - 1} for sample {df.loc[bad, 'sample_id'].iloc[0]!r}")
        df = df.assign(label=df["label"].astype("int64"))
    else:
        for sid, labels in zip(df["sample_id"], df["labels"], strict=True):
            if labels is None or len(labels) != k or any(v not in (0, 1) for v in labels):
                raise DataError(f"{source}: labels of sample {sid!r} must be {k} values in {{0, 1}}")
        df = df.assign(labels=[[int(v) for v in labels] for labels in df["labels"]])
    for m in info.modalities:
        for sid, rel in zip(df["sample_id"], df[f"path_{m}"], strict=True):
            if not isinstance(rel, str) or not (root / rel).exists():
                raise DataError(f"{source}: image for sample {sid!r} ({m}) not found: {root / str(rel)}")
    df = df.assign(sample_id=df["sample_id"].astype(str), patient_id=df["patient_id"].astype(str))
    order = {s: i for i, s in enumerate(SPLITS)}
    df = df.sort_values(["split", "sample_id"], key=lambda c: c.map(order) if c.name == "split" else c)
    return df.reset_index(drop=True)


def write_classes(root: Path, info: DatasetInfo, extra: dict[str, Any] | None = None) -> None:
    (root / CLASSES_JSON).write_text(json.dumps({**info.to_json(), **(extra or {})}, indent=2) + "\n")


def load_manifest(root: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read ``manifest.parquet`` and ``classes.json`` of a prepared dataset folder."""
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"prepared manifest not found: {path} (run the prepare stage)")
    return pd.read_parquet(path), json.loads((root / CLASSES_JSON).read_text())


def label_matrix(df: pd.DataFrame, classes: dict[str, Any]):
    """Labels as a numpy array: (N,) ints for multiclass, (N, K) 0/1 for multilabel."""
    import numpy as np

    if classes["task"] == "multilabel":
        return np.array([list(v) for v in df["labels"]], dtype=np.int64)
    return df["label"].to_numpy(dtype=np.int64)
