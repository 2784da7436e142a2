"""Image measurements behind the ``attributes`` backend: colour, size proportion, shape, texture, lesion count.

VAP-Diffusion Sec. 2.2 asks the MLLM about predefined visual attributes (shape, colour, size, texture); the
offline backend measures them from the pixels instead. Nothing here sees a label.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

#: polarity of the finding a modality's lesions show against their surroundings
POLARITIES = ("bright", "dark", "any")


@dataclass(frozen=True)
class Blob:
    """One segmented lesion: area and axes as fractions of the image, shape statistics, position."""

    area: float
    major: float
    minor: float
    circularity: float
    irregularity: float
    x: float
    y: float
    rgb: tuple[float, float, float]

    @property
    def eccentricity(self) -> float:
        return float(np.sqrt(max(0.0, 1.0 - (self.minor / self.major) ** 2))) if self.major > 0 else 0.0


@dataclass(frozen=True)
class Measurements:
    """What the ``attributes`` backend knows about one image (all fractions are of the whole image)."""

    height: int
    width: int
    channels: int
    brightness: float  # mean luminance of the field of view, 0..1
    background_rgb: tuple[float, float, float]
    grain: float  # fine-scale relative variation of the background (texture)
    lesions: list[Blob] = field(default_factory=list)
    dark_spots: list[Blob] = field(default_factory=list)  # dark blobs of a bright-lesion modality (e.g. haemorrhages)
    landmark: Blob | None = None  # the optic disc of a fundus image
    bands: dict[str, float] | None = None  # cross-section modalities: tilt, pocket width, ...

    @property
    def lesion_area(self) -> float:
        return float(sum(b.area for b in self.lesions))


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) → float RGB (H, W, 3) in 0..1 (grey is repeated)."""
    arr = image.astype(np.float64) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3]


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _blobs(mask: np.ndarray, rgb: np.ndarray, min_px: int) -> list[Blob]:
    """Connected components of ``mask`` with their size, shape (moments, perimeter) and median colour."""
    h, w = mask.shape
    labels, n = ndimage.label(mask)
    out = []
    for i in range(1, n + 1):
        comp = labels == i
        px = int(comp.sum())
        if px < min_px:
            continue
        ys, xs = np.nonzero(comp)
        cov = np.cov(np.stack([xs, ys])) if px > 1 else np.zeros((2, 2))
        ev = np.sort(np.linalg.eigvalsh(cov + 1e-9 * np.eye(2)))[::-1]
        major, minor = 4 * np.sqrt(ev[0]) + 1, 4 * np.sqrt(max(ev[1], 0.0)) + 1  # full axes of the moment ellipse
        edge = comp & ~ndimage.binary_erosion(comp)
        perimeter = max(float(edge.sum()), 1.0)
        circ = float(min(1.0, 4 * np.pi * px / perimeter**2 * 1.6))
        hull_fill = px / (np.pi / 4 * major * minor)
        out.append(Blob(area=px / (h * w), major=float(major) / w, minor=float(minor) / w, circularity=circ,
                        irregularity=float(abs(1 - hull_fill)), x=float(xs.mean() / w * 2 - 1),
                        y=float(ys.mean() / h * 2 - 1),
                        rgb=tuple(float(v) for v in np.median(rgb[comp], axis=0))))
    return out


def _grain(lum: np.ndarray, region: np.ndarray) -> float:
    """Texture: median absolute fine-scale residual (luminance minus its 3 × 3 mean) inside ``region``."""
    rel = np.abs(lum - ndimage.uniform_filter(lum, 3))
    vals = rel[region]
    return float(np.median(vals)) if vals.size else 0.0


def measure_enface(image: np.ndarray, polarity: str, threshold: float, min_px: int,
                   landmark: str | None = None, window: float = 0.5) -> Measurements:
    """An en-face photograph (fundus, skin, endoscopy, X-ray, ultrasound): lesions differ from the local background.

    The local background is a median filter ``window`` × the image side wide (wider than the largest lesion); a
    lesion pixel differs from it by more than ``threshold`` in luminance with the modality's ``polarity``.
    ``landmark="optic_disc"`` sets aside the largest bright blob in the outer third of the width (a fundus image's
    disc is anatomy, not a lesion).
    """
    rgb = to_float(image)
    h, w, _ = rgb.shape
    lum = luminance(rgb)
    fov = ndimage.binary_erosion(lum > 0.04, iterations=2)
    if fov.sum() < 0.2 * h * w:
        fov = np.ones_like(fov)
    filled = np.where(fov, lum, np.median(lum[fov]))
    bg = ndimage.median_filter(filled, size=max(5, int(window * h)) | 1)
    diff = filled - bg
    bright = (diff > threshold) & fov
    dark = (diff < -threshold) & fov
    lesion_mask = {"bright": bright, "dark": dark, "any": bright | dark}[polarity]
    lesions = _blobs(lesion_mask, rgb, min_px)
    disc = None
    if landmark == "optic_disc":
        cands = [b for b in lesions if abs(b.x) > 0.3]
        if cands:
            disc = max(cands, key=lambda b: b.area)
            lesions = [b for b in lesions if b is not disc]
    deep = (diff / np.maximum(bg, 0.05) < -0.4) & fov  # clearly darker than the surroundings
    spots = _blobs(deep, rgb, min_px) if polarity == "bright" else []
    spots = [b for b in spots if b.circularity > 0.5 and b.major < 0.25]  # round dark spots, not vessels
    quiet = fov & ~ndimage.binary_dilation(bright | dark, iterations=1)
    grain = _grain(lum, quiet if quiet.any() else fov)
    bg_rgb = tuple(float(v) for v in np.median(rgb[quiet if quiet.any() else fov], axis=0))
    return Measurements(height=h, width=w, channels=image.shape[-1] if image.ndim == 3 else 1,
                        brightness=float(lum[fov].mean()), background_rgb=bg_rgb,
                        grain=grain, lesions=lesions, dark_spots=spots,
                        landmark=disc)


def measure_cross_section(image: np.ndarray, threshold: float, min_px: int) -> Measurements:
    """A layered cross-section (OCT B-scan): band tilt, and dark pockets inside the tissue below the top band."""
    rgb = to_float(image)
    h, w, _ = rgb.shape
    lum = luminance(rgb)
    smooth = ndimage.gaussian_filter(lum, 1.2)
    tissue_level = 0.5 * (np.percentile(smooth, 95) + np.percentile(smooth, 20))
    cols = np.arange(w)
    surface = np.array([np.argmax(smooth[:, c] > tissue_level) if (smooth[:, c] > tissue_level).any() else -1
                        for c in cols], dtype=np.float64)
    ok = surface >= 0
    x = cols / w * 2 - 1
    slope = float(np.polyfit(x[ok], surface[ok] / h * 2, 1)[0]) if ok.sum() >= 4 else 0.0
    # tissue between the surface and the deepest bright row; a pocket lifts the upper bands off the bottom band
    deepest = np.array([np.max(np.nonzero(smooth[:, c] > tissue_level)[0]) if ok[c] else -1 for c in cols],
                       dtype=np.float64)
    thick = ndimage.median_filter(np.where(ok, deepest - surface, np.nan), size=3, mode="nearest")
    excess = thick - np.nanmedian(thick)
    lifted = np.nan_to_num(excess) > threshold * h
    runs, n = ndimage.label(lifted)
    width, centre, height = 0.0, 0.0, 0.0
    if n:
        sizes = ndimage.sum(lifted, runs, index=np.arange(1, n + 1))
        best = int(np.argmax(sizes)) + 1
        span = np.nonzero(runs == best)[0]
        if span.size >= min_px:
            width, centre = span.size / w, float(x[span].mean())
            height = float(np.nanmax(excess[span]) / h)
    blobs = []
    thickness = float(np.nanmedian(thick) / h) if ok.any() else 0.0
    rows = np.arange(h)[:, None]
    quiet = (rows > surface[None, :] + 1) & (rows < deepest[None, :] - 1)
    dark = lum < tissue_level * 0.5
    return Measurements(height=h, width=w, channels=image.shape[-1] if image.ndim == 3 else 1,
                        brightness=float(lum.mean()),
                        background_rgb=tuple(float(v) for v in np.median(rgb[dark], axis=0)) if dark.any()
                        else (0.0, 0.0, 0.0),
                        grain=_grain(lum, quiet if quiet.any() else np.ones_like(quiet)), lesions=blobs,
                        bands={"tilt": slope, "pocket_width": width, "pocket_x": centre, "pocket_height": height,
                               "thickness": thickness})


def colour_name(rgb: tuple[float, float, float]) -> str:
    """A plain colour word for an RGB triple (hue, saturation and value bins)."""
    hh, s, v = colorsys.rgb_to_hsv(*rgb)
    hue = hh * 360
    if v < 0.15:
        return "black"
    if s < 0.12:
        return "white" if v > 0.8 else "grey" if v > 0.3 else "dark grey"
    if s < 0.45 and v > 0.6 and 15 <= hue < 70:
        return "whitish"
    if hue < 15 or hue >= 340:
        return "dark red" if v < 0.5 else "red" if s > 0.6 else "pink"
    if hue < 37.5:
        return "brown" if v < 0.5 else "orange"
    if hue < 70:
        return "olive" if v < 0.5 else "yellow"
    if hue < 170:
        return "green"
    if hue < 260:
        return "blue"
    return "purple"
