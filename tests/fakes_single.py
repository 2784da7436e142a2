"""Tiny stand-ins for the single-modality datasets, with the real archive names, folder layouts, file names
and label-file headers (the real releases'), a few 40×40 images each."""

from __future__ import annotations

import csv
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 40
_ZIP_DATE = (2018, 1, 1, 0, 0, 0)


def image_bytes(seed: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE, 3) if mode == "RGB" else (SIZE, SIZE, 4) if mode == "RGBA" else (SIZE, SIZE)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def mask_bytes(box: tuple[int, int, int, int], value: int = 255) -> bytes:
    arr = np.zeros((SIZE, SIZE), dtype=np.uint8)
    y0, y1, x0, x1 = box
    arr[y0:y1, x0:x1] = value
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, _ZIP_DATE), data)
    return path


def write_targz(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def csv_text(header: list[str], rows: list[list[object]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- ISIC 2018 Task 3
ISIC_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
ISIC_PARTS = {"Training": (24306, 2), "Validation": (34321, 1), "Test": (34524, 1)}  # first id, images/class


def build_isic2018(out: Path, drop_column: str | None = None, not_onehot: bool = False,
                   corrupt: bool = False) -> dict[str, list[tuple[str, int]]]:
    """The six ISIC2018_Task3_* zips in ``out``; returns {part: [(image id, label)]}. The options break the
    Training part: a ground-truth column removed, a row with two ones, an image replaced by junk."""
    truth: dict[str, list[tuple[str, int]]] = {}
    for part, (first, per_class) in ISIC_PARTS.items():
        items = [(f"ISIC_{first + i:07d}", i % 7) for i in range(7 * per_class)]
        truth[part] = items
        folder = f"ISIC2018_Task3_{part}_Input"
        members = {f"{folder}/{img}.jpg": image_bytes(first + i) for i, (img, _) in enumerate(items)}
        if corrupt and part == "Training":
            members[f"{folder}/{items[0][0]}.jpg"] = b"\xff\xd8 not really a jpeg"
        members[f"{folder}/ATTRIBUTION.txt"] = b"HAM10000 attribution\n"
        members[f"{folder}/LICENSE.txt"] = b"CC BY-NC 4.0\n"
        write_zip(out / f"{folder}.zip", members)
        header = ["image", *ISIC_CLASSES]
        rows: list[list[object]] = [[img, *(f"{float(c == lab):.1f}" for c in range(7))]
                                    for img, lab in items]
        if part == "Training":
            if not_onehot:
                rows[1][1:3] = ["1.0", "1.0"]
            if drop_column:
                k = header.index(drop_column)
                header = header[:k] + header[k + 1:]
                rows = [r[:k] + r[k + 1:] for r in rows]
        gt = f"ISIC2018_Task3_{part}_GroundTruth"
        write_zip(out / f"{gt}.zip", {f"{gt}/{gt}.csv": csv_text(header, rows),
                                      f"{gt}/LICENSE.txt": b"CC BY-NC 4.0\n"})
    return truth


# ---------------------------------------------------------------- ISIC 2019
ISIC19_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC19_COUNTS = (10, 20, 10, 5, 5, 5, 5, 5)  # images per class (UNK: none, as in the real training set)


def build_isic2019(out: Path, no_class_row: int | None = None) -> dict[str, int]:
    """``ISIC_2019_Training_Input.zip`` (``ISIC_2019_Training_Input/ISIC_*.jpg`` plus the licence files) and
    ``ISIC_2019_Training_GroundTruth.csv`` (one-hot floats, an all-zero UNK column, classes interleaved) in
    ``out``; returns {image id: label}. ``no_class_row``: that data row (0-based) is UNK instead."""
    labels = np.random.default_rng(19).permutation(np.repeat(np.arange(8), ISIC19_COUNTS))
    truth = {f"ISIC_{100 + 7 * i:07d}": int(lab) for i, lab in enumerate(labels)}
    folder = "ISIC_2019_Training_Input"
    members = {f"{folder}/{img}.jpg": image_bytes(i) for i, img in enumerate(truth)}
    members[f"{folder}/ATTRIBUTION.txt"] = b"ISIC 2019 attribution\n"
    members[f"{folder}/LICENSE.txt"] = b"CC BY-NC 4.0\n"
    write_zip(out / f"{folder}.zip", members)
    rows: list[list[object]] = [[img, *(f"{float(c == lab):.1f}" for c in range(9))] for img, lab in truth.items()]
    if no_class_row is not None:
        rows[no_class_row][1:] = ["0.0"] * 8 + ["1.0"]
    (out / "ISIC_2019_Training_GroundTruth.csv").write_bytes(csv_text(["image", *ISIC19_COLUMNS], rows))
    return truth


# ---------------------------------------------------------------- NIH ChestX-ray14
CXR14_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
#: (patient, findings per follow-up); patients 1–7 in train_val_list, 8–10 in test_list
CXR14_PATIENTS = {
    1: ["Cardiomegaly", "Cardiomegaly|Emphysema", "Cardiomegaly|Effusion"],
    2: ["No Finding", "No Finding"],
    3: ["Hernia", "Atelectasis"],
    4: ["Effusion|Infiltration", "Nodule", "No Finding"],
    5: ["No Finding", "Pleural_Thickening"],
    6: ["Mass", "No Finding", "Pneumothorax"],
    7: ["Consolidation|Edema|Pneumonia", "Fibrosis"],
    8: ["No Finding", "Infiltration"],
    9: ["Effusion", "Atelectasis|Effusion"],
    10: ["No Finding", "Emphysema", "Hernia"],
}
CXR14_TEST_PATIENTS = {8, 9, 10}


def build_chestxray14(raw: Path, with_csv: bool = True) -> dict[str, str]:
    """12 ``images_NNN.tar.gz`` (2 × ``images/<Image Index>`` each), the v2020 label CSV (11-field rows)
    and the split lists in ``raw``; returns {image: findings}."""
    findings: dict[str, str] = {}
    rows = []
    for pid, labels in CXR14_PATIENTS.items():
        for fu, lab in enumerate(labels):
            name = f"{pid:08d}_{fu:03d}.png"
            findings[name] = lab
            rows.append(f"{name},{lab},{fu},{pid},{40 + pid:03d},{'MF'[pid % 2]},PA,2500,2048,0.168,0.168")
    names = sorted(findings)
    for k in range(12):
        members = {}
        for j, name in enumerate(names[2 * k:2 * k + 2]):
            mode = "RGBA" if k == 0 and j == 0 else "L"  # a few real PNGs are RGBA
            members[f"images/{name}"] = image_bytes(100 + 2 * k + j, "PNG", mode)
        write_targz(raw / f"images_{k + 1:03d}.tar.gz", members)
    if with_csv:
        (raw / "Data_Entry_2017_v2020.csv").write_text(CXR14_HEADER + "\n" + "\n".join(rows) + "\n")
    test = [n for n in names if int(n[:8]) in CXR14_TEST_PATIENTS]
    (raw / "train_val_list.txt").write_text("\n".join(n for n in names if n not in test) + "\n")
    (raw / "test_list.txt").write_text("\n".join(test) + "\n")
    return findings


# ---------------------------------------------------------------- pediatric chest X-ray (Kermany)
KERMANY = {
    "train": {"NORMAL": ["IM-0115-0001", "IM-0117-0001", "IM-0119-0001", "NORMAL2-IM-0427-0001",
                         "NORMAL2-IM-0427-0002", "NORMAL2-IM-0431-0001"],
              "PNEUMONIA": ["person1_bacteria_1", "person1_bacteria_2", "person1_virus_6", "person3_virus_15",
                            "person10_bacteria_43", "person11_virus_38", "person12_bacteria_47"]},
    "val": {"NORMAL": ["NORMAL2-IM-1427-0001", "NORMAL2-IM-1430-0001"],
            "PNEUMONIA": ["person1946_bacteria_4874", "person1952_bacteria_4883"]},
    "test": {"NORMAL": ["IM-0001-0001", "IM-0003-0001", "NORMAL2-IM-0007-0001"],
             "PNEUMONIA": ["person100_bacteria_475", "person101_bacteria_484", "person1_virus_9"]},
}


def _kermany_tree(prefix: str, folders: tuple[str, ...]) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    seed = 0
    for folder in folders:
        members[f"{prefix}{folder}/.DS_Store"] = b"\x00\x00\x00\x01Bud1"
        for cls, stems in KERMANY[folder].items():
            for stem in stems:
                seed += 1
                mode = "RGB" if seed % 5 == 0 else "L"  # some files are RGB
                members[f"{prefix}{folder}/{cls}/{stem}.jpeg"] = image_bytes(seed, "JPEG", mode)
            members[f"{prefix}{folder}/{cls}/.DS_Store"] = b"\x00\x00\x00\x01Bud1"
    return members


def build_cxr_pneumonia(raw: Path, variant: str) -> Path:
    """``ChestXRay2017.zip`` (mendeley: train/test; the Kaggle val images are part of train there) or
    ``archive.zip`` (kaggle: train/val/test, plus the duplicate ``chest_xray/chest_xray`` tree and
    ``__MACOSX`` forks the Kaggle archive carries)."""
    if variant == "mendeley":
        members = _kermany_tree("chest_xray/", ("train", "test"))
        for cls, stems in KERMANY["val"].items():  # Mendeley has no val: those images sit in train
            for i, stem in enumerate(stems):
                members[f"chest_xray/train/{cls}/{stem}.jpeg"] = image_bytes(500 + i)
        members["__MACOSX/chest_xray/train/NORMAL/._IM-0115-0001.jpeg"] = b"\x00\x05\x16\x07 fork"
        return write_zip(raw / "ChestXRay2017.zip", members)
    members = _kermany_tree("chest_xray/", ("train", "val", "test"))
    members.update(_kermany_tree("chest_xray/chest_xray/", ("train", "val", "test")))
    members["chest_xray/__MACOSX/chest_xray/train/NORMAL/._IM-0115-0001.jpeg"] = b"\x00\x05\x16\x07 fork"
    return write_zip(raw / "archive.zip", members)


# ---------------------------------------------------------------- BUSI
BUSI_COUNTS = {"benign": 6, "malignant": 5, "normal": 5}


def build_busi(raw: Path) -> Path:
    """``Dataset_BUSI_with_GT.zip``: ``"<class> (N).png"`` + ``_mask.png``; benign (2) and malignant (1) also
    have ``_mask_1.png``; normal masks are empty."""
    members: dict[str, bytes] = {}
    for c, (cls, n) in enumerate(BUSI_COUNTS.items()):
        for i in range(1, n + 1):
            base = f"Dataset_BUSI_with_GT/{cls}/{cls} ({i})"
            members[f"{base}.png"] = image_bytes(1000 * c + i, "PNG", "RGB" if i == 3 else "L")
            box = (0, 0, 0, 0) if cls == "normal" else (2, 12, 2, 12)
            members[f"{base}_mask.png"] = mask_bytes(box)
            if (cls, i) in {("benign", 2), ("malignant", 1)}:
                members[f"{base}_mask_1.png"] = mask_bytes((20, 30, 25, 35))
    return write_zip(raw / "Dataset_BUSI_with_GT.zip", members)
