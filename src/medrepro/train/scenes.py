"""Generic scenes: the out-of-domain image pool the embedded stand-in for a vision foundation model learns from.

The papers' towers (CLIP, DINOv2, ImageNet CNNs) were pretrained on natural images, not on the medical task, so
their frozen features carry generic shape, colour, texture and layout, and adaptation has work to do. These scenes
play that part offline: a smooth or textured background (colour or grey, sometimes a grating of some orientation)
with one to six objects (disc, square, triangle, ring, bar) of random colour, size and position. Each scene has
generic labels — the shape and hue of its largest object, how many objects it holds, the grating's orientation,
whether it is grey — and none of synth_mm's findings (no retina, no drusen, no fluid pocket).
"""

from __future__ import annotations

import colorsys

import numpy as np

SHAPES = ("disc", "square", "triangle", "ring", "bar")
GRATINGS = ("none", "horizontal", "vertical", "diagonal", "antidiagonal")
HUES = 6  # hue bins of the largest object's colour
MAX_OBJECTS = 6
#: the label heads a scene pool carries and their number of classes
TARGETS = {"shape": len(SHAPES), "count": MAX_OBJECTS, "grating": len(GRATINGS), "hue": HUES, "grey": 2}
_SUPER = 2  # supersampling factor (anti-aliased edges)


def _shape_mask(kind: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float,
                angle: float) -> np.ndarray:
    """A filled shape of radius ``r`` centred at (cx, cy), rotated by ``angle`` (boolean mask)."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    if kind == "disc":
        return u**2 + v**2 <= r**2
    if kind == "ring":
        d = np.sqrt(u**2 + v**2)
        return (d <= r) & (d >= 0.55 * r)
    if kind == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if kind == "bar":
        return (np.abs(u) <= r) & (np.abs(v) <= 0.25 * r)
    # triangle: three half-planes of an equilateral triangle
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = angle + np.pi / 2 + 2 * np.pi * k / 3
        inside &= (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a) <= 0.5 * r
    return inside


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, int]]:
    """One scene (H, W, 3) uint8 and its labels (``TARGETS`` keys)."""
    n = size * _SUPER
    ax = (np.arange(n) + 0.5) / n * 2 - 1
    xx, yy = np.meshgrid(ax, ax, indexing="xy")
    grey = bool(rng.random() < 0.3)
    c0, c1 = rng.uniform(0.1, 0.9, size=3), rng.uniform(0.1, 0.9, size=3)
    g = rng.uniform(-1, 1, size=2)
    t = np.clip(0.5 + 0.5 * (g[0] * xx + g[1] * yy), 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    grating = int(rng.integers(0, len(GRATINGS)))
    if grating:
        direction = {1: (0.0, 1.0), 2: (1.0, 0.0), 3: (0.707, 0.707), 4: (0.707, -0.707)}[grating]
        freq = rng.uniform(4, 9)
        wave = np.sin(np.pi * freq * (direction[0] * xx + direction[1] * yy) + rng.uniform(0, 6.3))
        img = img * (1 + rng.uniform(0.15, 0.35) * wave[..., None])
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    radii = np.sort(rng.uniform(0.06, 0.4, size=count))[::-1]
    kinds = rng.integers(0, len(SHAPES), size=count)
    hues = rng.uniform(0, 1, size=count)
    for k in range(count - 1, -1, -1):  # largest last, on top
        rgb = np.array(colorsys.hsv_to_rgb(hues[k], rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)))
        m = _shape_mask(SHAPES[kinds[k]], xx, yy, *rng.uniform(-0.6, 0.6, size=2), radii[k],
                        rng.uniform(0, np.pi))
        img = np.where(m[..., None], rgb, img)
    img = img + 0.03 * rng.standard_normal(img.shape)
    if grey:
        img = np.repeat(img.mean(-1, keepdims=True), 3, axis=-1)
    img = img.reshape(size, _SUPER, size, _SUPER, 3).mean((1, 3))
    labels = {"shape": int(kinds[0]), "count": count - 1, "grating": grating,
              "hue": int(hues[0] * HUES) % HUES, "grey": int(grey)}
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), labels


def render_pool(seed: int, n: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` scenes (N, H, W, 3) uint8 and their labels (one int64 array per ``TARGETS`` key)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    labels: dict[str, list[int]] = {k: [] for k in TARGETS}
    for i in range(n):
        images[i], lab = render_scene(rng, size)
        for k, v in lab.items():
            labels[k].append(v)
    return images, {k: np.asarray(v, np.int64) for k, v in labels.items()}
