"""isic2019: ISIC 2019 Challenge training set, 8 lesion classes, dermoscopic RGB images.

Facts used (the ISIC 2019 challenge release): ``2019/ISIC_2019_Training_Input.zip`` (~9 GB, images
``ISIC_2019_Training_Input/<image>.jpg``) and ``2019/ISIC_2019_Training_GroundTruth.csv`` (header
``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``, one-hot floats) under
``https://isic-challenge-data.s3.amazonaws.com/`` (no login, no published checksum: fetch records the
observed sha256). 25,331 training images; no official val or test split.

Chosen here:

- ``UNK`` (the test-time "none of the above" class) has no positive in the training ground truth, so it is
  dropped: 8 classes, single-label multiclass. A row with no positive among the 8 (an ``UNK`` row, or all
  zeros) or with several is a DataError naming the file, the row and the image.
- Splits, as VAP-Diffusion ("randomly splitting ISIC2019 … with a ratio of 8:2"): a seeded (``split_seed``),
  class-stratified ``test_fraction`` (0.2) of the images is test; val is a seeded (``val_seed``),
  class-stratified ``val_fraction`` of the rest (train), as the other adapters carve val from train. The
  test split does not depend on the val options, and neither depends on the CSV's row order.
- The ground truth has no patient or lesion id, so ``patient_id`` = image id and the split is image-level,
  like the paper's random split. ``ISIC_2019_Training_Metadata.csv`` (which holds a ``lesion_id`` for part
  of the images) is not fetched: nothing here uses it.
- The image folder is found by name wherever the zip puts it (wrapper folders tolerated); extension case
  is ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.data.adapter_files import image_paths, read_table, require_root
from medrepro.data.archives import extract
from medrepro.data.official_splits import assign_splits
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError

CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")  # CSV column order = label index; UNK dropped
DROPPED = "UNK"
BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/"
PAGE = "https://challenge.isic-archive.com/data/#2019"
INPUT_ZIP = "ISIC_2019_Training_Input.zip"
INPUT_FOLDER = "ISIC_2019_Training_Input"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"


def read_ground_truth(csv_path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The ground-truth rows and their integer labels over ``CLASSES``; every row must have exactly one 1
    among them (UNK is ignored), else DataError naming the file, the data row (1 = first after the header)
    and the image."""
    df = read_table(csv_path, ["image", *CLASSES], dtype={"image": str})
    if df.empty:
        raise DataError(f"{csv_path}: no rows")
    dup = df["image"].duplicated()
    if dup.any():
        raise DataError(f"{csv_path}: duplicate image {df.loc[dup, 'image'].iloc[0]!r}")
    try:
        values = df[list(CLASSES)].to_numpy(dtype=float)
    except ValueError as exc:
        raise DataError(f"{csv_path}: non-numeric value in the class columns ({exc})") from exc
    binary = np.isin(values, (0.0, 1.0)).all(axis=1)
    positives = values.sum(axis=1)
    bad = np.flatnonzero(~binary | (positives != 1))
    if bad.size:
        i = int(bad[0])
        where = f"{csv_path}: data row {i + 1} (image {df['image'].iloc[i]!r})"
        if not binary[i]:
            raise DataError(f"{where}: class values must be 0 or 1, got {values[i].tolist()}")
        if positives[i] == 0:
            raise DataError(f"{where} has no positive among {','.join(CLASSES)} ({DROPPED} is dropped: "
                            f"no training image has it)")
        raise DataError(f"{where} has {int(positives[i])} positives among {','.join(CLASSES)}; a single label "
                        f"is expected")
    return df, values.argmax(axis=1)


def split_8_2(ids: list[str], labels: np.ndarray, *, test_fraction: float = 0.2, split_seed: int = 0,
              val_fraction: float = 0.1, val_seed: int = 0) -> np.ndarray:
    """train/val/test per image: a class-stratified ``test_fraction`` drawn with ``split_seed``, then a
    class-stratified ``val_fraction`` of the remaining images drawn with ``val_seed``."""
    split = assign_splits(len(ids), {"test": test_fraction}, split_seed, strata=labels.tolist(), groups=ids)
    train = split == "train"
    split[train] = assign_splits(int(train.sum()), {"val": val_fraction}, val_seed, strata=labels[train].tolist(),
                                 groups=[i for i, t in zip(ids, train, strict=True) if t])
    return split


@register_dataset("isic2019")
class Adapter(DatasetAdapter):
    info = DatasetInfo("isic2019", ("image",), CLASSES, "multiclass", channels=(3,))

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(name, url=BASE_URL + name, page=PAGE) for name in (INPUT_ZIP, GROUND_TRUTH)]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        input_zip = raw_dir / INPUT_ZIP
        extract(input_zip, files_dir)
        csv_path = raw_dir / GROUND_TRUTH
        df, labels = read_ground_truth(csv_path)
        paths = image_paths(df["image"], require_root(files_dir, INPUT_FOLDER, input_zip) / INPUT_FOLDER, files_dir,
                            csv_path, input_zip)
        ids = df["image"].tolist()
        split = split_8_2(ids, labels, test_fraction=float(self.cfg.get("test_fraction", 0.2)),
                          split_seed=int(self.cfg.get("split_seed", 0)),
                          val_fraction=float(self.cfg.get("val_fraction", 0.1)),
                          val_seed=int(self.cfg.get("val_seed", 0)))
        return pd.DataFrame({"sample_id": ids, "patient_id": ids, "split": split, "label": labels,
                             "path_image": paths})
