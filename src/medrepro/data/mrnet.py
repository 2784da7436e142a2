"""MRNet: knee MRI exams, three views (axial, coronal, sagittal) as modalities, three binary labels.

Facts used (the MRNet release; the EI authors' public code):

- ``MRNet-v1.0.zip`` (~5.7 GB) after accepting the research-use agreement → manual placement at
  ``data/raw/mrnet/MRNet-v1.0.zip``; no published checksum.
- Layout ``MRNet-v1.0/{train,valid}/{axial,coronal,sagittal}/NNNN.npy`` (uint8 volumes (S, 256, 256), S
  varies) and ``{train,valid}-{abnormal,acl,meniscus}.csv`` without header: zero-padded case id (read as a
  string; unpadded numeric ids are padded to 4 digits), label 0/1. The folder holding ``train-abnormal.csv``
  is searched for, so a different wrapper folder also works.
- Multi-label task; ``labels`` = [abnormal, meniscus, acl] (EI's order). Every case must appear in all three
  label files of its split.
- The official test set is hidden: official ``valid`` (120 exams) → our test; ``n_val`` (default 120) train
  exams, drawn uniformly without replacement with ``numpy.random.default_rng(val_seed)`` from the sorted
  train ids, → val (EI holds out a val set from train; how it was drawn is not published [U], nor whether it
  was stratified).
- ``patient_id`` = case id (the release has one exam per case id; whether patients repeat is not stated
  [U]).
- ``load_image`` returns (S, H, W, 1) uint8; all slices are cached (offsets in the cache), the loaders pick
  slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.data.adapter_files import manifest_path, read_table, require_root
from medrepro.data.archives import extract
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError, ParamsError

ARCHIVE = "MRNet-v1.0.zip"
PAGE = "https://stanfordmlgroup.github.io/competitions/mrnet/ (research-use agreement; link sent by e-mail)"
VIEWS = ("axial", "coronal", "sagittal")
TASKS = ("abnormal", "meniscus", "acl")
#: official split folder → our split (train is further divided into train/val)
OFFICIAL = {"train": "train", "valid": "test"}


def case_id(raw: str) -> str:
    raw = raw.strip()
    return raw.zfill(4) if raw.isdigit() else raw


def read_labels(root: Path, official: str) -> dict[str, list[int]]:
    """case id → [abnormal, meniscus, acl] from the three header-less label files of one official split."""
    per_task: dict[str, dict[str, int]] = {}
    for task in TASKS:
        path = root / f"{official}-{task}.csv"
        df = read_table(path, [0, 1], header=None, dtype=str, keep_default_na=False)
        values: dict[str, int] = {}
        for raw_id, raw_label in zip(df[0], df[1], strict=True):
            cid = case_id(raw_id)
            if raw_label.strip() not in ("0", "1"):
                raise DataError(f"{path}: label {raw_label!r} of case {cid!r} is not 0 or 1")
            if cid in values:
                raise DataError(f"{path}: case {cid!r} listed twice")
            values[cid] = int(raw_label)
        per_task[task] = values
    cases = per_task[TASKS[0]]
    for task in TASKS[1:]:
        path = root / f"{official}-{task}.csv"
        diff = sorted(set(cases) ^ set(per_task[task]))
        if diff:
            where = path if diff[0] not in per_task[task] else root / f"{official}-{TASKS[0]}.csv"
            raise DataError(f"{where}: case {diff[0]!r} missing (the three {official} label files must list "
                            f"the same cases)")
    return {c: [per_task[t][c] for t in TASKS] for c in sorted(cases)}


def to_uint8(vol: np.ndarray) -> np.ndarray:
    """Volumes are uint8 in the release; other dtypes are kept if already in 0..255, else min-max scaled."""
    if vol.dtype == np.uint8:
        return vol
    vol = vol.astype(np.float64)
    lo, hi = float(vol.min()), float(vol.max())
    if lo < 0 or hi > 255:
        vol = (vol - lo) / max(hi - lo, 1e-12) * 255
    return np.clip(np.rint(vol), 0, 255).astype(np.uint8)


@register_dataset("mrnet")
class Adapter(DatasetAdapter):
    info = DatasetInfo("mrnet", VIEWS, TASKS, "multilabel", channels=(1, 1, 1), volumetric=True)

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(ARCHIVE, page=PAGE)]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        archive = raw_dir / ARCHIVE
        extract(archive, files_dir)
        root = require_root(files_dir, "train-abnormal.csv", archive)
        rows = []
        for official, split in OFFICIAL.items():
            for cid, labels in read_labels(root, official).items():
                row = {"sample_id": cid, "patient_id": cid, "split": split, "labels": labels,
                       "official_split": official}
                for v in VIEWS:
                    row[f"path_{v}"] = manifest_path(files_dir, root / official / v / f"{cid}.npy")
                rows.append(row)
        df = pd.DataFrame(rows)
        train_ids = df.loc[df["split"] == "train", "sample_id"].sort_values().to_numpy()
        n_val = int(self.cfg.get("n_val", 120))
        if not 0 < n_val < len(train_ids):
            raise ParamsError(f"data.mrnet.n_val = {n_val} must be in 1..{len(train_ids) - 1} "
                              f"({len(train_ids)} official train exams)")
        rng = np.random.default_rng(int(self.cfg.get("val_seed", 0)))
        val_ids = set(rng.choice(train_ids, size=n_val, replace=False).tolist())
        df.loc[df["sample_id"].isin(val_ids), "split"] = "val"
        return df

    def load_image(self, path: Path, modality: str) -> np.ndarray:
        if not path.is_file():
            raise DataError(f"volume referenced by the manifest is missing: {path}")
        try:
            vol = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"corrupt or unreadable volume {path}: {exc}") from exc
        if not isinstance(vol, np.ndarray) or vol.ndim != 3 or 0 in vol.shape:
            shape = getattr(vol, "shape", None)
            raise DataError(f"{path}: expected a (slices, height, width) volume, got shape {shape}")
        return to_uint8(vol)[..., None]
