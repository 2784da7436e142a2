"""Tiny stand-ins for the MMC-AMD, Derm7pt and MRNet archives: real folder/file names and label columns.

Each ``*_members()`` returns ``{path inside the archive: bytes}``; tests may edit that dict (drop an image,
break a label file) before :func:`write_zip` writes the archive. ``MMC_EYES``, ``DERM_CASES`` and
``MRNET_CASES`` (with ``mrnet_labels``/``mrnet_slices``) describe what the tests expect back.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

_ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 40)) -> bytes:
    """A small RGB JPEG with seeded noise (width, height = ``size``)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def csv_bytes(rows: list[list[object]], header: list[str] | None = None) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode()


def lines_bytes(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def write_zip(members: dict[str, bytes], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            zf.writestr(zipfile.ZipInfo(name, _ZIP_DATE), members[name])
    return path


# --------------------------------------------------------------------------------------------------- MMC-AMD
#: eye → (split in AP, split in A, number of CFP images, number of OCT B-scans); the id holds the class letter
MMC_EYES: dict[str, tuple[str, str, int, int]] = {
    "h-1001": ("train", "train", 1, 2),  # two B-scans: the first sorted one is kept
    "d-1002": ("train", "train", 1, 1),
    "p-1003": ("train", "val", 1, 1),
    "w-1004": ("train", "train", 2, 1),  # two CFPs
    "w-1005": ("train", "train", 1, 0),  # CFP only → not a sample
    "h-1006": ("train", "train", 0, 1),  # OCT only → not a sample
    "d-1007": ("train", "train", 1, 3),
    "p-1008": ("train", "train", 1, 1),
    "h-2001": ("val", "test", 1, 1),
    "w-2002": ("val", "val", 1, 2),
    "d-2003": ("val", "val", 1, 0),
    "p-3001": ("test", "test", 1, 1),
    "d-3002": ("test", "train", 1, 1),
}
MMC_LABEL = {"h": 0, "d": 1, "p": 2, "w": 3}
MMC_PREP = {"cfp": "cfp-clahe-448x448", "oct": "oct-median3x3-448x448"}


def mmc_image_ids(eye: str, modality: str) -> list[str]:
    n_cfp, n_oct = MMC_EYES[eye][2:]
    prefix, n = ("f", n_cfp) if modality == "cfp" else ("o", n_oct)
    return [f"{prefix}-{eye}" + (f"_{k}" if k else "") for k in range(n)]


def mmc_amd_members() -> dict[str, bytes]:
    """``VisualSearch/`` with ImageData and both split versions (A, AP), as the authors' code reads it."""
    members: dict[str, bytes] = {}
    seed = 0
    for eye in MMC_EYES:
        for m, prep in MMC_PREP.items():
            for image_id in mmc_image_ids(eye, m):
                members[f"VisualSearch/mmc-amd/ImageData/{prep}/{image_id}.jpg"] = jpeg_bytes(seed)
                seed += 1
    for version, col in (("AP", 0), ("A", 1)):
        for split in ("train", "val", "test"):
            folder = f"VisualSearch/mmc-amd-split{version}-{split}"
            eyes = [e for e, spec in MMC_EYES.items() if spec[col] == split]
            for m in MMC_PREP:
                ids = [i for e in eyes for i in mmc_image_ids(e, m)]
                members[f"{folder}/ImageSets/{m}.txt"] = lines_bytes(ids)
                labels = [f"{i} {MMC_LABEL[i[2]]}" for i in ids]
                members[f"{folder}/annotations/{m}.txt"] = lines_bytes(labels)
                members[f"{folder}/EyeSets/{m}.txt"] = lines_bytes(sorted({i[2:].split("_")[0] for i in ids}))
                members[f"{folder}/SubjectSets/{m}.txt"] = lines_bytes(sorted({f"s{i[4:8]}" for i in ids}))
            if split != "train":
                pairs = [f"{f} {o}" for e in eyes
                         for f in mmc_image_ids(e, "cfp") for o in mmc_image_ids(e, "oct")]
                members[f"{folder}/ImageSets/mm.txt"] = lines_bytes(pairs)
    return members


# --------------------------------------------------------------------------------------------------- Derm7pt
DERM_COLUMNS = ["case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks", "pigmentation",
                "regression_structures", "dots_and_globules", "blue_whitish_veil", "vascular_structures",
                "level_of_diagnostic_difficulty", "elevation", "location", "sex", "management", "clinic",
                "derm", "case_id", "notes"]
#: (case_num, diagnosis, clinic path in meta.csv, derm path in meta.csv, official split, expected class)
DERM_CASES: list[tuple[int, str, str, str, str, int]] = [
    (1, "basal cell carcinoma", "Aal/Aal001.jpg", "Aal/Aal002.JPG", "train", 0),
    (2, "clark nevus", "NEL/NEL025.JPG", "NEL/Nel026.jpg", "train", 1),
    (3, "melanoma (in situ)", "Fel/Fel009.jpg", "Fel/Fel010.jpg", "train", 2),  # on disk: Fel010.JPG
    (4, "seborrheic keratosis", "Gal/Gal001.jpg", "Gal/Gal002.jpg", "train", 3),
    (5, "lentigo", "Fcl/Fcl001.jpg", "Fcl/Fcl002.jpg", "train", 4),
    (6, "reed or spitz nevus", "Nbl/Nbl001.jpg", "Nbl/Nbl002.jpg", "train", 1),
    (7, "melanoma (more than 1.5 mm)", "Fil/Fil001.jpg", "Fil/Fil002.jpg", "valid", 2),
    (8, "vascular lesion", "Ggl/Ggl001.jpg", "Ggl/Ggl002.jpg", "valid", 4),
    (9, "basal cell carcinoma", "Abl/Abl001.jpg", "Abl/Abl002.jpg", "test", 0),
    (10, "nevus", "Nal/Nal001.jpg", "Nal/Nal002.jpg", "test", 1),
]
DERM_ON_DISK = {"Fel/Fel010.jpg": "Fel/Fel010.JPG"}  # meta.csv and file name differ in case


def derm7pt_meta_rows() -> list[dict[str, object]]:
    rows = []
    for num, diagnosis, clinic, derm, _, _ in DERM_CASES:
        row: dict[str, object] = {c: "absent" for c in DERM_COLUMNS}
        row.update(case_num=num, diagnosis=diagnosis, seven_point_score=num % 4, pigment_network="typical",
                   level_of_diagnostic_difficulty="medium", elevation="flat", location="back", sex="female",
                   management="excision", clinic=clinic, derm=derm, case_id=Path(derm).stem.upper(), notes="")
        rows.append(row)
    return rows


def derm7pt_meta_bytes(rows: list[dict[str, object]], columns: list[str] | None = None) -> bytes:
    columns = columns or DERM_COLUMNS
    return csv_bytes([[r[c] for c in columns] for r in rows], header=columns)


def derm7pt_members() -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for k, (_, _, clinic, derm, _, _) in enumerate(DERM_CASES):
        for j, rel in enumerate((clinic, derm)):
            members[f"release_v0/images/{DERM_ON_DISK.get(rel, rel)}"] = jpeg_bytes(100 + 2 * k + j, (48, 40))
    members["release_v0/meta/meta.csv"] = derm7pt_meta_bytes(derm7pt_meta_rows())
    for official in ("train", "valid", "test"):
        idx = [i for i, case in enumerate(DERM_CASES) if case[4] == official][::-1]  # not in row order
        members[f"release_v0/meta/{official}_indexes.csv"] = csv_bytes([[i] for i in idx], header=["indexes"])
    return members


# --------------------------------------------------------------------------------------------------- MRNet
MRNET_VIEWS = ("axial", "coronal", "sagittal")
#: official split → case ids (zero-padded, continuing across splits as in the release)
MRNET_CASES = {"train": [f"{i:04d}" for i in range(8)], "valid": [f"{i:04d}" for i in range(8, 11)]}


def mrnet_labels(cid: str) -> list[int]:
    """[abnormal, meniscus, acl] of a fake case."""
    i = int(cid)
    acl, meniscus = int(i % 3 == 0), int(i % 2 == 0)
    return [int(acl or meniscus or i % 5 == 1), meniscus, acl]


def mrnet_slices(cid: str, view: str) -> int:
    return 4 + (int(cid) + MRNET_VIEWS.index(view)) % 3


def mrnet_members() -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    rng = np.random.default_rng(7)
    for official, cases in MRNET_CASES.items():
        for cid in cases:
            for view in MRNET_VIEWS:
                vol = rng.integers(0, 256, size=(mrnet_slices(cid, view), 32, 32), dtype=np.uint8)
                members[f"MRNet-v1.0/{official}/{view}/{cid}.npy"] = npy_bytes(vol)
        for t, task in enumerate(("abnormal", "meniscus", "acl")):
            rows = [[cid, mrnet_labels(cid)[t]] for cid in cases]
            members[f"MRNet-v1.0/{official}-{task}.csv"] = csv_bytes(rows)
    return members
