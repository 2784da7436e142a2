"""The generators' own image cache: every image of a prepared dataset centre-cropped to ``diffusion.image_size``.

The classifiers' cache (``data/prepared/<dataset>/cache``) squashes each image to the dataset's ``image_size``;
VAP-Diffusion's generators instead see the centred square of the raw image, scaled down to the generator's size
(U-ViT's ``center_crop_arr``), as upstream trains them. Built from the decoded files under the prepared folder, in
the same format (``medrepro.data.cache``) plus ``info.json`` (size, fit, how many images had to be enlarged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medrepro.data.cache import CACHE_DIR, build_cache, open_cache
from medrepro.data.images import centre_crop_square, is_upsampled, read_image
from medrepro.data.manifest import load_manifest
from medrepro.errors import DataError
from medrepro.io import atomic_path, read_json, write_json

log = logging.getLogger("medrepro")

INFO = "info.json"
FIT = "centre_crop"


def build_generator_cache(prepared: Path, out: Path, size: int, workers: int = 2) -> dict[str, Any]:
    """Centre-crop every image of the prepared dataset at ``prepared`` to ``size`` px under ``out`` (atomically);
    return the info record. Images smaller than ``size`` are enlarged (and counted: ``n_upsampled``)."""
    manifest, classes = load_manifest(prepared)
    name = classes.get("name", prepared.name)
    if classes.get("volumetric"):
        raise DataError(f"{name}: the generators' image cache holds 2-D images; {name} holds volumes")
    upsampled: dict[str, int] = {}
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / CACHE_DIR).mkdir(parents=True)
        for m, ch in zip(classes["modalities"], classes["channels"], strict=True):
            small: list[bool] = []

            def fit(frames: np.ndarray, s: int, small: list[bool] = small) -> np.ndarray:
                small.extend(is_upsampled(f.shape, s) for f in frames)
                return np.stack([centre_crop_square(f, s) for f in frames])

            paths = [prepared / p for p in manifest[f"path_{m}"]]
            build_cache(paths, lambda p, ch=ch: read_image(p, channels=ch, draft_size=size), size, ch,
                        tmp / CACHE_DIR / m, workers=workers, desc=f"{name}/{m} @{size}", fit=fit)
            upsampled[m] = int(sum(small))
            if upsampled[m]:
                log.warning("%s/%s: %d of %d images are smaller than %d px and were enlarged", name, m,
                            upsampled[m], len(paths), size)
        record = {"dataset": name, "image_size": size, "fit": FIT, "n_images": len(manifest),
                  "n_upsampled": upsampled}
        write_json(tmp / INFO, record)
    return record


def open_generator_cache(root: Path, modality: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped frames and offsets of one modality of the generator cache at ``root``, which must hold
    ``size`` px images (``diffusion.image_size``)."""
    info = root / INFO
    if not info.is_file():
        raise DataError(f"generator image cache missing: {info} (run the generator_images stage)")
    made = read_json(info)["image_size"]
    if made != size:
        raise DataError(f"{info}: the generator image cache is at {made} px, diffusion.image_size is {size} "
                        "(rerun the generator_images stage)")
    return open_cache(root, modality)
