"""HiCA's ROI image cache: every image of a prepared dataset at ``hica.roi_image_size``, for ROI crops that resolve
what the classifier's cache does not (Sec. III-B.2: the ROIs are cropped from the image, not from a thumbnail).

With ``hica.roi_source: full`` the local term (Eq. 4) cuts its crops from this copy: the boxes are found on the
augmented training image (``medrepro.models.hica_rois``, in the classifier cache's pixels) and scaled by
``roi_image_size / image_size``, a whole number, so the selection rule, its pixel parameters and lesion masks are
those of ``cache``; only the crops' pixels change. Images are squashed to a square exactly as the classifier's
cache (``resize_square``), so one scale maps every box. With ``roi_source: cache`` the stage writes only its
``info.json`` and training crops the classifier's cache as before. Same format as ``medrepro.data.cache``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medrepro.data.cache import CACHE_DIR, build_cache
from medrepro.data.images import read_image
from medrepro.data.loaders import CachedImages
from medrepro.data.manifest import load_manifest
from medrepro.errors import DataError
from medrepro.io import atomic_path, read_json, write_json

INFO = "info.json"
SOURCES = ("cache", "full")


def build_roi_images(prepared: Path, out: Path, source: str, size: int, workers: int = 2) -> dict[str, Any]:
    """Under ``out`` (atomically): with ``source`` full, every image of the prepared dataset at ``prepared`` resized
    to ``size`` px; with cache, nothing but the info record. Returns the record."""
    manifest, classes = load_manifest(prepared)
    name = classes.get("name", prepared.name)
    if source not in SOURCES:
        raise DataError(f"hica.roi_source must be one of {SOURCES}, got {source!r}")
    if source == "full" and classes.get("volumetric"):
        raise DataError(f"{name}: HiCA's ROIs are 2-D; {name} holds volumes")
    record: dict[str, Any] = {"dataset": name, "source": source}
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        if source == "full":
            (tmp / CACHE_DIR).mkdir()
            for m, ch in zip(classes["modalities"], classes["channels"], strict=True):
                paths = [prepared / p for p in manifest[f"path_{m}"]]
                build_cache(paths, lambda p, ch=ch: read_image(p, channels=ch, draft_size=size), size, ch,
                            tmp / CACHE_DIR / m, workers=workers, desc=f"{name}/{m} ROI @{size}")
            record.update(image_size=size, cache_size=int(classes.get("image_size", 0)), n_images=len(manifest))
        write_json(tmp / INFO, record)
    return record


def open_roi_images(root: Path, size: int, like: CachedImages) -> CachedImages:
    """The ROI image cache at ``root`` (``size`` px, a whole multiple of the classifier cache ``like``'s side):
    its modalities, normalised as ``like``'s batches."""
    info = root / INFO
    if not info.is_file():
        raise DataError(f"HiCA ROI image cache missing: {info} (run the hica_roi_images stage)")
    made = read_json(info)
    if made.get("source") != "full" or made.get("image_size") != size:
        raise DataError(f"{info}: the ROI image cache holds source {made.get('source')!r} at "
                        f"{made.get('image_size')} px; hica.roi_source full needs {size} px (hica.roi_image_size; "
                        "rerun the hica_roi_images stage)")
    cache_size = int(next(iter(like.cache.values())).frames.shape[1])
    if size % cache_size or size <= cache_size:
        raise DataError(f"hica.roi_image_size {size} is not a whole multiple (above 1) of the classifier cache's "
                        f"{cache_size} px ({root})")
    out = CachedImages(root, like.modalities)
    out.mean, out.std = like.mean, like.std
    return out
