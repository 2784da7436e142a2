"""cxr_pneumonia: pediatric chest X-rays (Kermany et al. 2018), NORMAL vs PNEUMONIA, greyscale.

Facts used (the published distributions): two distributions of the same 5,856 JPEGs.

- ``variant: mendeley`` (default): Mendeley Data ``rscbjbr9sj/2`` (CC BY 4.0), ``ChestXRay2017.zip`` with
  ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg`` (train 5,232, test 624), no val folder; val is a
  seeded (``val_seed``), class-stratified, patient-level ``val_fraction`` of train.
- ``variant: kaggle``: ``archive.zip`` of Kaggle ``paultimothymooney/chest-xray-pneumonia`` (account
  needed), ``chest_xray/{train,val,test}/…`` used as the official split (5,216 / 16 / 624). That archive
  may repeat the tree under ``chest_xray/chest_xray/`` and ``__MACOSX/``; the shallowest one is used.

Both are placed by hand: neither has a stable direct file URL (public code often downloads
``MENDELEY_URL`` below; unverified here, so fetch does not use it). ``.DS_Store``, macOS ``._*`` forks and
non-image files are skipped; RGB files are converted to grey when decoded (channels 1).

Patient ids (inferred from the file-name convention, not documented by the authors): ``personN_…``
(pneumonia, ``person1_bacteria_1.jpeg``) → ``personN``; ``IM-NNNN-MMMM`` / ``NORMAL2-IM-NNNN-MMMM``
(normal) → ``IM-NNNN`` / ``NORMAL2-IM-NNNN``; any other name → its stem (one image per patient).
Sample ids are ``<source folder>_<class>_<stem>``, unique across the original folders.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from medrepro.data.adapter_files import manifest_path, require_root
from medrepro.data.archives import extract
from medrepro.data.official_splits import assign_splits, list_images
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import ParamsError

CLASSES = ("NORMAL", "PNEUMONIA")
VARIANTS: dict[str, dict[str, Any]] = {
    "mendeley": {"archive": "ChestXRay2017.zip", "page": "https://data.mendeley.com/datasets/rscbjbr9sj/2",
                 "folders": ("train", "test")},
    "kaggle": {"archive": "archive.zip",
               "page": "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
               "folders": ("train", "val", "test")},
}
#: candidate direct URL of ChestXRay2017.zip seen in public code (unverified; not used by fetch).
MENDELEY_URL = ("https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
                "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded")
_PATIENT = (re.compile(r"^(person\d+)_", re.IGNORECASE),
            re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+$", re.IGNORECASE))


def patient_id(stem: str) -> str:
    """Patient id embedded in a Kermany file name, else the stem itself."""
    for pattern in _PATIENT:
        m = pattern.match(stem)
        if m:
            return m.group(1)
    return stem


@register_dataset("cxr_pneumonia")
class Adapter(DatasetAdapter):
    info = DatasetInfo("cxr_pneumonia", ("image",), CLASSES, "multiclass", channels=(1,))

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        super().__init__(cfg)
        self.variant = str(self.cfg.get("variant", "mendeley"))
        if self.variant not in VARIANTS:
            raise ParamsError(f"data.cxr_pneumonia.variant: {self.variant!r} is not one of "
                              f"{', '.join(VARIANTS)}")
        self.spec = VARIANTS[self.variant]

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(self.spec["archive"], page=self.spec["page"])]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        archive = raw_dir / self.spec["archive"]
        extract(archive, files_dir)
        folders: tuple[str, ...] = self.spec["folders"]
        root = require_root(files_dir, f"{folders[-1]}/{CLASSES[-1]}", archive)
        rows = []
        for folder in folders:
            for label, cls in enumerate(CLASSES):
                for path in list_images(root / folder / cls):
                    rows.append({"sample_id": f"{folder}_{cls}_{path.stem}",
                                 "patient_id": patient_id(path.stem), "split": folder, "label": label,
                                 "path_image": manifest_path(files_dir, path)})
        df = pd.DataFrame(rows)
        if self.variant == "mendeley":
            train = (df["split"] == "train").to_numpy()
            df.loc[train, "split"] = assign_splits(
                int(train.sum()), {"val": float(self.cfg.get("val_fraction", 0.1))},
                int(self.cfg.get("val_seed", 0)), strata=df.loc[train, "label"].tolist(),
                groups=df.loc[train, "patient_id"].tolist())
        return df
