"""isic2018: ISIC 2018 Task 3 (HAM10000 lesion diagnosis), 7 classes, dermoscopic RGB images.

Facts used (the ISIC 2018 challenge release): six public zips
``2018/ISIC2018_Task3_{Training,Validation,Test}_{Input,GroundTruth}.zip`` under
``https://isic-challenge-data.s3.amazonaws.com/`` (no login, no published checksum: fetch records the
observed sha256); each extracts to a same-named folder; the ground-truth CSV
``ISIC2018_Task3_<Part>_GroundTruth.csv`` has header ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` with one-hot
floats; images are ``<image>.jpg``. Official splits: train 10,015 / val 193 / test 1,512.

Chosen here: the Task 3 ground truth has no patient or lesion id (HAM10000's ``lesion_id`` lives in a
separate metadata file), so ``patient_id`` = image id; unused for splitting, as the splits are official.
CSV and image folders are found by name wherever the zip puts them (wrapper folders tolerated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.data.adapter_files import image_paths, read_table, require_root
from medrepro.data.archives import extract
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError

CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # CSV column order = label index
BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2018/"
PARTS = {"Training": "train", "Validation": "val", "Test": "test"}


def archive_name(part: str, kind: str) -> str:
    return f"ISIC2018_Task3_{part}_{kind}.zip"


def onehot_labels(df: pd.DataFrame, csv_path: Path) -> np.ndarray:
    """Integer labels from the one-hot class columns; a row that is not exactly one-hot raises DataError."""
    try:
        values = df[list(CLASSES)].to_numpy(dtype=float)
    except ValueError as exc:
        raise DataError(f"{csv_path}: non-numeric value in the class columns ({exc})") from exc
    ok = np.isin(values, (0.0, 1.0)).all(axis=1) & (values.sum(axis=1) == 1)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise DataError(f"{csv_path}: row of image {df['image'].iloc[bad]!r} is not one-hot over "
                        f"{','.join(CLASSES)}: {values[bad].tolist()}")
    return values.argmax(axis=1)


@register_dataset("isic2018")
class Adapter(DatasetAdapter):
    info = DatasetInfo("isic2018", ("image",), CLASSES, "multiclass", channels=(3,))

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(name, url=BASE_URL + name, page="https://challenge.isic-archive.com/data/#2018")
                for part in PARTS for kind in ("Input", "GroundTruth") for name in [archive_name(part, kind)]]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        frames = []
        for part, split in PARTS.items():
            for kind in ("Input", "GroundTruth"):
                extract(raw_dir / archive_name(part, kind), files_dir)
            csv_name = f"ISIC2018_Task3_{part}_GroundTruth.csv"
            gt_zip = raw_dir / archive_name(part, "GroundTruth")
            csv_path = require_root(files_dir, csv_name, gt_zip) / csv_name
            df = read_table(csv_path, ["image", *CLASSES], dtype={"image": str})
            labels = onehot_labels(df, csv_path)
            input_zip = raw_dir / archive_name(part, "Input")
            folder = f"ISIC2018_Task3_{part}_Input"
            input_dir = require_root(files_dir, folder, input_zip) / folder
            paths = image_paths(df["image"], input_dir, files_dir, csv_path, input_zip)
            frames.append(pd.DataFrame({"sample_id": df["image"], "patient_id": df["image"],
                                        "split": split, "label": labels, "path_image": paths}))
        return pd.concat(frames, ignore_index=True)
