"""busi: Breast Ultrasound Images (Al-Dhabyani et al.), benign / malignant / normal, grey, with masks.

Facts used (the BUSI release): ``Dataset_BUSI_with_GT.zip`` (host unstable; placed by hand, Kaggle
mirror ``aryashah2k/breast-ultrasound-images-dataset``) holding
``Dataset_BUSI_with_GT/<class>/"<class> (N).png"`` with masks ``"<class> (N)_mask.png"``; 17 cases add
``_mask_1.png``, … (780 images: 437 / 210 / 133). No official split.

Chosen here: images are the PNGs without ``_mask`` in the name. Each mask is binarised at half its own
maximum (robust to 0/255 and 0/1 encodings), resized to its image (nearest) if the sizes differ, and all
masks of an image are OR-merged into ``files/masks/<sample_id>.png`` (0/255), exposed as the extra
``path_mask`` column (None for an image without a mask; masks without an image are ignored). Sample id =
the file stem made file-name safe (``"benign (1)"`` → ``benign_1``); there are no patient ids, so
``patient_id`` = sample id. Splits: seeded (``split_seed``), class-stratified ``val_fraction`` /
``test_fraction`` of the images. Known duplicates and lesions filed under both benign and malignant are
kept as distributed.

Option ``binary`` (default false): the task HiCA's paper reports (Sec. IV: "benign and malignant tumor
classifications"): the ``normal`` images are left out and the classes are benign / malignant (647 images: 437 /
210); false keeps all three classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from medrepro.data.adapter_files import manifest_path, require_root
from medrepro.data.archives import extract
from medrepro.data.official_splits import assign_splits, list_images, safe_id
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError

CLASSES = ("benign", "malignant", "normal")
#: the tumour classes of the binary task (option ``binary``)
TUMOURS = CLASSES[:2]
ARCHIVE = "Dataset_BUSI_with_GT.zip"
PAGE = "https://www.kaggle.com/datasets/aryashah2k/breast-ultrasound-images-dataset"


def mask_owner(path: Path) -> str | None:
    """The image stem a mask file belongs to (``"benign (1)_mask_1.png"`` → ``"benign (1)"``), else None."""
    cut = path.stem.lower().find("_mask")
    return path.stem[:cut] if cut >= 0 else None


def merge_masks(image: Path, masks: list[Path], out: Path) -> None:
    """OR-merge the binarised ``masks`` of ``image`` into one 0/255 greyscale PNG at ``out``."""
    try:
        with Image.open(image) as img:
            size = img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"corrupt or unreadable image {image}: {exc}") from exc
    merged = np.zeros((size[1], size[0]), dtype=bool)
    for mask in masks:
        try:
            with Image.open(mask) as m:
                m = m.convert("L")
                if m.size != size:
                    m = m.resize(size, Image.Resampling.NEAREST)
                arr = np.asarray(m)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"corrupt or unreadable mask {mask}: {exc}") from exc
        if arr.max() > 0:
            merged |= arr >= max(1, int(arr.max()) // 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(merged.astype(np.uint8) * 255, mode="L").save(out)


def _info(binary: bool) -> DatasetInfo:
    return DatasetInfo("busi", ("image",), TUMOURS if binary else CLASSES, "multiclass", channels=(1,))


@register_dataset("busi")
class Adapter(DatasetAdapter):
    info = _info(False)

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        super().__init__(cfg)
        self.info = _info(bool(self.cfg.get("binary", False)))

    def remote_files(self) -> list[RemoteFile]:
        return [RemoteFile(ARCHIVE, page=PAGE)]

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        extract(raw_dir / ARCHIVE, files_dir)
        root = require_root(files_dir, CLASSES[1], raw_dir / ARCHIVE)
        rows = []
        for label, cls in enumerate(self.info.classes):  # binary: the normal folder is never read
            masks: dict[str, list[Path]] = {}
            images = []
            for path in list_images(root / cls):
                owner = mask_owner(path)
                if owner is None:
                    images.append(path)
                else:
                    masks.setdefault(owner, []).append(path)
            for path in images:
                sid = safe_id(path.stem)
                mask_path = None
                if path.stem in masks:
                    out = files_dir / "masks" / f"{sid}.png"
                    merge_masks(path, masks[path.stem], out)
                    mask_path = manifest_path(files_dir, out)
                rows.append({"sample_id": sid, "patient_id": sid, "label": label,
                             "path_image": manifest_path(files_dir, path), "path_mask": mask_path})
        df = pd.DataFrame(rows)
        fractions = {"val": float(self.cfg.get("val_fraction", 0.1)),
                     "test": float(self.cfg.get("test_fraction", 0.2))}
        df["split"] = assign_splits(len(df), fractions, int(self.cfg.get("split_seed", 0)),
                                    strata=df["label"].tolist())
        return df
