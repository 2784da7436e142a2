"""Derm7pt (seven-point checklist): a dermoscopic and a clinical image per lesion, 5 diagnosis classes.

Facts used (the repository ``jeremykawahara/derm7pt``):

- ``release_v0.zip`` from https://derm.cs.sfu.ca/restricted/release_v0.zip after registration → manual
  placement at ``data/raw/derm7pt/release_v0.zip``; no published checksum (fetch records the observed
  sha256).
- Layout ``release_v0/images/<dir>/<file>``, ``release_v0/meta/meta.csv`` and
  ``release_v0/meta/{train,valid,test}_indexes.csv``; the index files have one column ``indexes`` = row
  positions into meta.csv. Official train/valid/test → our train/val/test (413/203/395 of 1,011 cases).
  The release folder is searched for by its ``meta/meta.csv``, so another wrapper folder also works.
- meta.csv columns ``derm`` / ``clinic`` are paths relative to ``images/`` with mixed-case extensions
  (``NEL/NEL025.JPG``, ``NEL/Nel026.jpg``); a path whose case differs from the file on disk is matched
  case-insensitively.
- Modality order ``derm`` then ``clinic`` and class order BCC, NEV, MEL, SK, MISC as in EI
  (the EI authors' public code); the 5-class grouping of ``diagnosis`` follows derm7pt's
  ``Derm7PtDatasetGroupInfrequent`` (see ``DIAGNOSIS``). Matching ignores case and surrounding spaces; any
  other value raises DataError naming meta.csv and the value.
- ``sample_id`` = ``patient_id`` = ``case_num`` (``case_id`` if meta.csv has no ``case_num``): the release
  does not say whether two cases can share a patient [U]. The raw ``diagnosis`` and the seven-point criteria
  (``attr_*``) are kept as extra columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.data.adapter_files import FileIndex, manifest_path, read_table, require_root
from medrepro.data.archives import extract
from medrepro.data.images import read_image
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError

ARCHIVE = "release_v0.zip"
PAGE = "https://derm.cs.sfu.ca/restricted/release_v0.zip (register at https://derm.cs.sfu.ca first)"
MODALITIES = ("derm", "clinic")
CLASSES = ("BCC", "NEV", "MEL", "SK", "MISC")
_GROUPS: dict[str, tuple[str, ...]] = {
    "BCC": ("basal cell carcinoma",),
    "NEV": ("nevus", "blue nevus", "clark nevus", "combined nevus", "congenital nevus", "dermal nevus",
            "recurrent nevus", "reed or spitz nevus"),
    "MEL": ("melanoma", "melanoma (in situ)", "melanoma (less than 0.76 mm)", "melanoma (0.76 to 1.5 mm)",
            "melanoma (more than 1.5 mm)", "melanoma metastasis"),
    "SK": ("seborrheic keratosis",),
    # "DF/LT/MLS/MISC" is the group's own name in derm7pt's code, accepted in case a release uses it
    "MISC": ("dermatofibroma", "lentigo", "melanosis", "miscellaneous", "vascular lesion", "df/lt/mls/misc"),
}
#: lower-cased meta.csv ``diagnosis`` → class index
DIAGNOSIS: dict[str, int] = {name: CLASSES.index(c) for c, names in _GROUPS.items() for name in names}
#: official index files → our split names
SPLIT_FILES = {"train": "train_indexes.csv", "val": "valid_indexes.csv", "test": "test_indexes.csv"}
SEVEN_POINT = ("pigment_network", "streaks", "pigmentation", "regression_structures", "dots_and_globules",
               "blue_whitish_veil", "vascular_structures")


def read_split_indexes(meta_dir: Path, n_rows: int) -> np.ndarray:
    """Split name per meta.csv row (None where a row is in no index file), from the official index files."""
    split = np.full(n_rows, None, dtype=object)
    for name, filename in SPLIT_FILES.items():
        path = meta_dir / filename
        col = read_table(path, ["indexes"])["indexes"]
        idx = pd.to_numeric(col, errors="coerce")
        if idx.isna().any() or (idx % 1 != 0).any():
            raise DataError(f"{path}: column 'indexes' must hold integer row positions")
        idx = idx.astype(np.int64).to_numpy()
        bad = idx[(idx < 0) | (idx >= n_rows)]
        if bad.size:
            raise DataError(f"{path}: index {int(bad[0])} outside the {n_rows} rows of meta.csv")
        seen = pd.Series(idx)
        again = seen[seen.duplicated().to_numpy() | pd.notna(split[idx])]
        if len(again):
            raise DataError(f"{path}: meta.csv row {int(again.iloc[0])} is listed twice in the index files")
        split[idx] = name
    return split


@register_dataset("derm7pt")
class Adapter(DatasetAdapter):
    info = DatasetInfo("derm7pt", MODALITIES, CLASSES, "multiclass", channels=(3, 3))

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(ARCHIVE, page=PAGE)]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        archive = raw_dir / ARCHIVE
        extract(archive, files_dir)
        root = require_root(files_dir, "meta/meta.csv", archive)
        meta_path = root / "meta" / "meta.csv"
        meta = read_table(meta_path, ["diagnosis", *MODALITIES], dtype=str, keep_default_na=False)
        id_col = next((c for c in ("case_num", "case_id") if c in meta.columns), None)
        if id_col is None:
            raise DataError(f"{meta_path}: missing column 'case_num' (or 'case_id')")
        split = read_split_indexes(root / "meta", len(meta))
        labels = []
        for case, diagnosis in zip(meta[id_col], meta["diagnosis"], strict=True):
            key = diagnosis.strip().lower()
            if key not in DIAGNOSIS:
                raise DataError(f"{meta_path}: unknown diagnosis {diagnosis!r} (case {case}); known: "
                                f"{', '.join(sorted(DIAGNOSIS))}")
            labels.append(DIAGNOSIS[key])
        images = FileIndex(root / "images")
        df = pd.DataFrame({
            "sample_id": meta[id_col].str.strip(),
            "patient_id": meta[id_col].str.strip(),
            "split": split,
            "label": labels,
        })
        for m in MODALITIES:
            paths = []
            for case, rel in zip(df["sample_id"], meta[m].str.strip(), strict=True):
                if not rel:
                    raise DataError(f"{meta_path}: empty {m!r} image path for case {case}")
                paths.append(manifest_path(files_dir, images.resolve(rel) or root / "images" / rel))
            df[f"path_{m}"] = paths
        df["diagnosis"] = meta["diagnosis"].str.strip()
        for c in SEVEN_POINT:
            if c in meta.columns:
                df[f"attr_{c}"] = meta[c].str.strip()
        return df[df["split"].notna()].reset_index(drop=True)

    def load_image(self, path: Path, modality: str) -> np.ndarray:
        # JPEG draft decoding skips detail that the resize to image_size would discard anyway
        return read_image(path, channels=3, draft_size=self.image_size)
