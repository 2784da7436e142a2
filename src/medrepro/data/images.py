"""Decoding and resizing single images with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medrepro.errors import DataError


def read_image(path: Path, channels: int = 3, draft_size: int | None = None) -> np.ndarray:
    """Decode ``path`` to uint8 (H, W, C) with C = ``channels`` (3 → RGB, 1 → grey).

    ``draft_size`` lets the JPEG decoder skip detail it would throw away on resize (much faster on large images).
    """
    if not path.is_file():
        raise DataError(f"image referenced by the manifest is missing: {path}")
    try:
        with Image.open(path) as img:
            if draft_size:
                img.draft("RGB" if channels == 3 else "L", (draft_size, draft_size))
            img = img.convert("RGB" if channels == 3 else "L")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt or unreadable image {path}: {exc}") from exc
    return arr[..., None] if arr.ndim == 2 else arr


def resize_square(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, C) or (S, H, W, C) uint8 array to size × size with bicubic interpolation."""
    if arr.ndim == 4:
        return np.stack([resize_square(s, size) for s in arr])
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    mode = "RGB" if arr.shape[2] == 3 else "L"
    img = Image.fromarray(arr if mode == "RGB" else arr[..., 0], mode=mode)
    out = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def centre_crop_square(arr: np.ndarray, size: int) -> np.ndarray:
    """The centred size × size square of an (H, W, C) uint8 image scaled so that its shorter side is ``size``
    (VAP-Diffusion's data pipeline, U-ViT's ``center_crop_arr``): halved with a box filter while the shorter side is
    at least 2·size, then bicubic to exactly size — a downsampling, unless the image is smaller than ``size``
    (``is_upsampled``). The aspect ratio is kept: nothing is squashed."""
    img = Image.fromarray(arr if arr.shape[2] == 3 else arr[..., 0], mode="RGB" if arr.shape[2] == 3 else "L")
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), Image.Resampling.BOX)
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    top, left = (h - size) // 2, (w - size) // 2
    out = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def is_upsampled(shape: tuple[int, ...], size: int) -> bool:
    """Whether ``centre_crop_square`` enlarges an image of ``shape`` (H, W, …): its shorter side is below size."""
    return min(shape[0], shape[1]) < size
