"""Regions of interest for HiCA's local alignment (Sec. III-B.2: "ROIs extracted using a segmentation model").

The paper names no segmentation model; the extractor is pluggable (``hica.rois.mode``):

- ``mask``: boxes of the connected components of a dataset's lesion mask (BUSI ships them: ``path_mask``), carried
  through augmentation with its image (``medrepro.hica.data``); an empty mask gives no ROI (the image then adds
  nothing to L_local). A dataset without masks, or a training sample without one, is an error;
- ``components``: threshold + connected components on the image itself: pixels whose grey value deviates from the
  image median by more than ``z`` robust standard deviations (1.4826 · MAD), 8-connected, kept when at least
  ``min_area`` pixels and not touching the image border (black borders and vignetting of fundus or ultrasound
  images are no lesions), largest first;
- ``grid``: the ``k`` cells of a fixed √k × √k grid (no segmentation at all);
- ``auto``: ``mask`` where the sample has a non-empty one, else ``components`` where any component is found, else
  ``grid``.

Boxes are (y0, x0, y1, x1), end-exclusive, grown by ``pad`` pixels and clipped to the image; at most ``k`` per
image. ``crops`` resizes them to the tower's input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medrepro.errors import ParamsError

MODES = ("auto", "mask", "components", "grid")
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class RoiConfig:
    mode: str = "auto"
    k: int = 4  # ROIs per image at most
    z: float = 2.5  # components: deviation threshold in robust standard deviations
    min_area: int = 4  # components: smallest component kept (pixels)
    pad: int = 1  # pixels added on every side of a box

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParamsError(f"hica.rois.mode must be one of {MODES}, got {self.mode!r}")
        if self.k < 1 or (self.mode == "grid" and round(self.k ** 0.5) ** 2 != self.k):
            raise ParamsError(f"hica.rois.k must be >= 1 (a square number for grid), got {self.k}")


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W) float grey values of an (H, W) or (H, W, C) image."""
    return image.astype(np.float64).mean(-1) if image.ndim == 3 else image.astype(np.float64)


def _boxes_of(labels: np.ndarray, n: int, k: int, min_area: int, pad: int, inner: bool = False) -> list[Box]:
    """Boxes of the ``k`` largest labelled components of at least ``min_area`` pixels (largest first); ``inner``:
    components touching the image border are left out."""
    if n == 0:
        return []
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    h, w = labels.shape
    slices = ndimage.find_objects(labels)
    if inner:
        touches = [sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w for sl in slices]
        areas = np.where(touches, 0, areas)
    order = [i for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area][:k]
    return [(max(slices[i][0].start - pad, 0), max(slices[i][1].start - pad, 0),
             min(slices[i][0].stop + pad, h), min(slices[i][1].stop + pad, w)) for i in order]


def mask_boxes(mask: np.ndarray, cfg: RoiConfig) -> list[Box]:
    """Boxes of the connected components of a binary (non-zero) mask."""
    labels, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3)))
    return _boxes_of(labels, n, cfg.k, 1, cfg.pad)


def component_boxes(image: np.ndarray, cfg: RoiConfig) -> list[Box]:
    """Boxes of the components that deviate from the image's median by more than z robust standard deviations."""
    g = _grey(image)
    med = np.median(g)
    scale = 1.4826 * np.median(np.abs(g - med))
    if scale == 0:
        scale = g.std()
    if scale == 0:
        return []
    labels, n = ndimage.label(np.abs(g - med) > cfg.z * scale, structure=np.ones((3, 3)))
    return _boxes_of(labels, n, cfg.k, cfg.min_area, cfg.pad, inner=True)


def grid_boxes(shape: tuple[int, int], k: int) -> list[Box]:
    """The cells of a √k × √k grid over an image of ``shape`` (row-major)."""
    side = max(1, round(k ** 0.5))
    h, w = shape
    ys, xs = np.linspace(0, h, side + 1).round().astype(int), np.linspace(0, w, side + 1).round().astype(int)
    return [(int(ys[r]), int(xs[c]), int(ys[r + 1]), int(xs[c + 1])) for r in range(side) for c in range(side)]


def roi_boxes(image: np.ndarray, cfg: RoiConfig, mask: np.ndarray | None = None) -> tuple[list[Box], str]:
    """The boxes of one image and the mode that produced them."""
    if cfg.mode in ("mask", "auto") and mask is not None:
        boxes = mask_boxes(mask, cfg)
        if boxes or cfg.mode == "mask":
            return boxes, "mask"
    elif cfg.mode == "mask":
        raise ParamsError("hica.rois.mode mask: this sample has no mask (use auto, components or grid)")
    if cfg.mode in ("components", "auto"):
        boxes = component_boxes(image, cfg)
        if boxes or cfg.mode == "components":
            return boxes, "components"
    return grid_boxes(image.shape[:2], grid_cells(cfg.k)), "grid"


def grid_cells(k: int) -> int:
    """Cells of the ROI grid for ``k`` ROIs: ``k`` when it is a square, else the nearest square (at least 1)."""
    return k if round(k ** 0.5) ** 2 == k else max(1, round(k ** 0.5) ** 2)


def training_boxes(image: np.ndarray, cfg: RoiConfig, mask: np.ndarray | None = None) -> list[Box]:
    """ROIs of an augmented training image and its augmented ``mask`` (None: the sample has none): the mask's
    components in modes ``mask`` (even none) and ``auto``; else the image's components (unless ``mode`` is grid),
    grid cells when it has none; at most ``cfg.k``."""
    if cfg.mode in ("mask", "auto") and mask is not None:
        boxes = mask_boxes(mask, cfg)
        if boxes or cfg.mode == "mask":
            return boxes
    elif cfg.mode == "mask":
        raise ParamsError("hica.rois.mode mask: a training sample has no mask (use auto, components or grid)")
    found = component_boxes(image, cfg) if cfg.mode != "grid" else []
    return found or grid_boxes(image.shape[:2], grid_cells(cfg.k))[: cfg.k]


def crops(image: torch.Tensor, boxes: list[Box], k: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, C, size, size) bilinear crops of a (C, H, W) float image at ``boxes`` (zeros beyond them) and the (k,)
    mask of real ROIs."""
    out = image.new_zeros(k, image.shape[0], size, size)
    valid = torch.zeros(k, dtype=torch.bool)
    for j, (y0, x0, y1, x1) in enumerate(boxes[:k]):
        patch = image[:, y0:y1, x0:x1].unsqueeze(0)
        out[j] = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0]
        valid[j] = True
    return out, valid
