"""MMC-AMD: colour fundus photographs (CFP) + OCT B-scans of one eye; classes normal, dry AMD, PCV, wet AMD.

Facts used (the dataset's repository ``li-xirong/mmc-amd``):

- Data on request via a Google Form → manual placement. Expected archive: ``data/raw/mmc_amd/mmc-amd.zip``
  holding the authors' ``VisualSearch/`` folder (the name is ours: the form's delivery format is not
  documented [U]; any wrapper folder above ``VisualSearch``, or none, is accepted because the folders are
  searched for).
- Images ``VisualSearch/mmc-amd/ImageData/{cfp-clahe-448x448,oct-median3x3-448x448}/<id>.jpg`` (already
  448×448); split folders ``VisualSearch/mmc-amd-split{A,AP}-{train,val,test}/`` with
  ``ImageSets/{cfp,oct}.txt`` (one image id per line) and ``annotations/{cfp,oct}.txt`` (line-aligned; the
  label is the last space-separated token). Images are also looked for under a split folder's own
  ``ImageData/`` (the authors' training code reads them there), and by file name anywhere under those
  folders if the preprocessing folder is named differently. Repackaged archives are accepted too: the split
  folders are searched for at any depth and ``ImageData/`` wherever it sits (e.g. ``mmc-amd/ImageData/`` with
  the split folders inside ``mmc-amd/`` next to it).
- Class = second hyphen token of the id (``f-w-1544817`` → w): h, d, p, w → 0..3. When both the annotation
  and the id give a label they must agree (a mismatch raises DataError). Eye id = ``id[2:].split('_')[0]``
  (``w-1544817``); the split folders do not tie images to subjects, so ``patient_id`` is the eye id (splits
  are eye-disjoint (A) or subject-disjoint (AP) by construction).
- A sample is an eye with both modalities (EI trains on pairs). An eye may have several OCT B-scans (and
  rarely several CFPs): we keep the first in sorted id order in every split. EI's code does that at
  evaluation but draws one B-scan at random per epoch in training; with a one-frame-per-sample cache we use
  the deterministic choice in training too (``n_oct`` records how many B-scans the eye has).
- Which split EI used is not stated [U]. ``split: AP`` (default) reproduces EI's 610/79/79 eyes exactly: the
  authors' count notebook gives, per AP split, CFP eyes 933/80/80 and OCT eyes 659/79/79 with unions
  982/80/80, i.e. 610/79/79 eyes with both. ``split: A`` is available; its counts are unknown.
- OCT is stored as 3 channels (the JPEGs may be grey-in-RGB [U]; 3 channels lose nothing either way).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.data.adapter_files import FileIndex, manifest_path, read_lines, require_root, walk_folders
from medrepro.data.archives import extract
from medrepro.data.images import read_image
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError, ParamsError

ARCHIVE = "mmc-amd.zip"
PAGE = "https://github.com/li-xirong/mmc-amd (Google Form linked in its README)"
CLASSES = ("normal", "dry", "pcv", "wet")
LETTERS = ("h", "d", "p", "w")  # class letter in the image id, same order as CLASSES
#: modality → its preprocessing folder under ImageData (ids start with f- / o-)
MODALITIES = {"cfp": "cfp-clahe-448x448", "oct": "oct-median3x3-448x448"}
SPLITS = ("train", "val", "test")
SUFFIXES = (".jpg", ".jpeg", ".png")


def eye_id(image_id: str) -> str:
    """``f-w-1544817_2`` → ``w-1544817`` (the authors' rule: drop the modality prefix and a ``_n`` suffix)."""
    return image_id[2:].split("_")[0]


def _strip_suffix(image_id: str) -> str:
    """Ids are listed without extension; tolerate lists that include one."""
    stem, dot, ext = image_id.rpartition(".")
    return stem if dot and f".{ext.lower()}" in SUFFIXES else image_id


def _letter_label(image_id: str) -> int | None:
    parts = image_id.split("-")
    return LETTERS.index(parts[1]) if len(parts) > 2 and parts[1] in LETTERS else None


def read_split_images(folder: Path, modality: str) -> list[tuple[str, int]]:
    """(image id, label) for one modality of one split folder, from ``ImageSets`` and ``annotations``."""
    imageset = folder / "ImageSets" / f"{modality}.txt"
    ids = [_strip_suffix(line) for line in read_lines(imageset)]
    ann_file = folder / "annotations" / f"{modality}.txt"
    ann = read_lines(ann_file) if ann_file.is_file() else None
    if ann is not None and len(ann) != len(ids):
        raise DataError(f"{ann_file}: {len(ann)} labels for {len(ids)} image ids in {imageset}")
    out = []
    for i, image_id in enumerate(ids):
        from_id = _letter_label(image_id)
        label = from_id
        if ann is not None:
            tokens = ann[i].split()
            if len(tokens) > 1 and tokens[0] != image_id:
                raise DataError(f"{ann_file} line {i + 1}: id {tokens[0]!r} does not match {image_id!r} "
                                f"in {imageset}")
            try:
                label = int(tokens[-1])
            except ValueError:
                raise DataError(f"{ann_file} line {i + 1}: label {tokens[-1]!r} is not an integer") from None
            if not 0 <= label < len(CLASSES):
                raise DataError(f"{ann_file} line {i + 1}: label {label} outside 0..{len(CLASSES) - 1}")
            if from_id is not None and from_id != label:
                raise DataError(f"{ann_file} line {i + 1}: label {label} contradicts the class letter of "
                                f"{image_id!r} ({LETTERS[from_id]} = {from_id})")
        if label is None:
            raise DataError(f"{imageset}: cannot tell the class of image id {image_id!r} (no annotations "
                            f"file and no h/d/p/w class letter)")
        out.append((image_id, label))
    return out


def image_data_roots(top: Path, max_depth: int = 5) -> list[Path]:
    """Every ``ImageData/`` folder under ``top`` (not searched inside), shallowest first, in sorted order."""
    def is_image_data(folder: Path) -> bool:
        return folder.name.lower() == "imagedata"

    return [f for f, depth in walk_folders(top, max_depth + 1, enter=lambda f: not is_image_data(f))
            if depth and is_image_data(f)]


class _ImageFinder:
    """Finds ``<id>.jpg`` in the documented preprocessing folders, else by file name under the image roots."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.indexes = [FileIndex(r, SUFFIXES) for r in roots]

    def find(self, modality: str, image_id: str) -> Path:
        prep = MODALITIES[modality]
        for root in self.roots:
            path = root / prep / f"{image_id}.jpg"
            if path.is_file():
                return path
        for index in self.indexes:
            hits = index.by_stem(image_id)
            preferred = [p for p in hits if p.parent.name.lower().startswith(modality)]
            if preferred or hits:
                return (preferred or hits)[0]
        return self.roots[0] / prep / f"{image_id}.jpg"  # missing: validation reports this path


@register_dataset("mmc_amd")
class Adapter(DatasetAdapter):
    info = DatasetInfo("mmc_amd", tuple(MODALITIES), CLASSES, "multiclass", channels=(3, 3))

    @property
    def split_version(self) -> str:
        version = str(self.cfg.get("split", "AP"))
        if version not in ("A", "AP"):
            raise ParamsError(f"data.mmc_amd.split must be 'A' or 'AP', got {version!r}")
        return version

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(ARCHIVE, page=PAGE)]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        version = self.split_version
        archive = raw_dir / ARCHIVE
        extract(archive, files_dir)
        layouts = (f"the authors' VisualSearch/mmc-amd/ImageData/ next to VisualSearch/mmc-amd-split{version}-*/, "
                   f"or a repackaged mmc-amd/ holding ImageData/ and the mmc-amd-split{version}-*/ folders")
        try:
            base = require_root(files_dir, f"mmc-amd-split{version}-train/ImageSets", archive, max_depth=5)
        except DataError as exc:
            raise DataError(f"{exc}; expected either layout: {layouts}") from None
        folders = {s: base / f"mmc-amd-split{version}-{s}" for s in SPLITS}
        for folder in folders.values():
            if not folder.is_dir():
                raise DataError(f"{archive}: split folder {folder.name}/ missing (expected next to "
                                f"{folders['train'].name}/)")
        documented = [base / "mmc-amd" / "ImageData", *(f / "ImageData" for f in folders.values())]
        roots = [r for r in documented if r.is_dir()]
        roots += [r for r in image_data_roots(files_dir) if r not in roots]
        if not roots:
            raise DataError(f"{archive}: no ImageData/ folder anywhere in the archive; expected either layout: "
                            f"{layouts}")
        finder = _ImageFinder(roots)
        rows = []
        for split, folder in folders.items():
            per_mod: dict[str, dict[str, list[tuple[str, int]]]] = {}
            for m in MODALITIES:
                eyes: dict[str, list[tuple[str, int]]] = {}
                for image_id, label in read_split_images(folder, m):
                    eyes.setdefault(eye_id(image_id), []).append((image_id, label))
                per_mod[m] = {e: sorted(v) for e, v in eyes.items()}
            for eye in sorted(set(per_mod["cfp"]) & set(per_mod["oct"])):
                firsts = {m: per_mod[m][eye][0] for m in MODALITIES}
                labels = {lab for m in MODALITIES for _, lab in per_mod[m][eye]}
                if len(labels) != 1:
                    raise DataError(f"{folder}: eye {eye!r} has images with labels {sorted(labels)}")
                row = {"sample_id": eye, "patient_id": eye, "split": split, "label": labels.pop()}
                for m, (image_id, _) in firsts.items():
                    row[f"path_{m}"] = manifest_path(files_dir, finder.find(m, image_id))
                    row[f"{m}_id"] = image_id
                    row[f"n_{m}"] = len(per_mod[m][eye])
                rows.append(row)
        if not rows:
            raise DataError(f"{archive}: no eye has both a CFP and an OCT image in split {version}")
        return pd.DataFrame(rows)

    def load_image(self, path: Path, modality: str) -> np.ndarray:
        return read_image(path, channels=3, draft_size=self.image_size)
