"""The decoded-image cache: every image resized once to the run's resolution, stored as uint8 arrays.

Per modality: ``cache/<modality>.npy`` holds all frames, shape (T, H, W, C), and ``cache/<modality>.offsets.npy``
(N + 1,) maps sample i (manifest order) to frames ``offsets[i]:offsets[i+1]`` — one frame for a 2-D image, one per
slice for a volume (MRNet). Training memory-maps these arrays and never decodes JPEG/PNG per epoch.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medrepro.data.images import resize_square
from medrepro.progress import progress_disabled

CACHE_DIR = "cache"


def build_cache(paths: list[Path], load: Callable[[Path], np.ndarray], size: int, channels: int, out: Path,
                workers: int = 2, desc: str = "cache",
                fit: Callable[[np.ndarray, int], np.ndarray] = resize_square) -> None:
    """Decode, resize and store ``paths`` in manifest order under ``out`` (``<out>.npy`` + ``<out>.offsets.npy``).
    ``fit`` maps one decoded (H, W, C) or (S, H, W, C) array to size × size (default: squashed, ``resize_square``).

    Decoding runs in a thread pool (PIL releases the GIL); frames stream to disk, so the cache of a large dataset
    never has to fit in RAM. Errors name the failing file (raised by ``load``).
    """

    def one(path: Path) -> np.ndarray:
        arr = load(path)
        arr = arr[None] if arr.ndim == 3 else arr
        return fit(arr, size)

    counts: list[int] = []
    raw = Path(f"{out}.frames.tmp")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, open(raw, "wb") as fh:
        for frames in tqdm(pool.map(one, paths), total=len(paths), desc=desc, disable=progress_disabled()):
            counts.append(frames.shape[0])
            fh.write(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    header = {"descr": "|u1", "fortran_order": False, "shape": (int(offsets[-1]), size, size, channels)}
    with open(f"{out}.npy", "wb") as dst, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(dst, header)
        shutil.copyfileobj(src, dst, 1 << 22)
    raw.unlink()
    np.save(f"{out}.offsets.npy", offsets)


def open_cache(root: Path, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map one modality's frames and load its offsets."""
    base = root / CACHE_DIR / modality
    return np.load(f"{base}.npy", mmap_mode="r"), np.load(f"{base}.offsets.npy")
