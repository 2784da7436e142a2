"""synth_mm: the embedded multimodal dataset, generated locally from a seed.

Each "patient" has two images of one eye: an en-face colour ``fundus`` image and a grey ``oct`` cross-section with
layered bands. Two latent findings define four classes (label = drusen + 2 · fluid):

- *drusen* — yellow-white deposits, visible mainly in the fundus (faint RPE bumps in the OCT, strength ``leak``);
- *fluid* — a dark sub-retinal pocket lifting the bands, visible mainly in the OCT (a faint dark macular halo in the
  fundus, strength ``leak``).

So each modality alone resolves only one of the two findings and fusion is needed. That is ``coupling:
independent`` (the default). There the best fusion is late and additive: the 4-class posterior factorises
into p(drusen | fundus) · p(fluid | oct), so nothing rewards early cross-modal guidance (measured: EI and
concatenation level, docs/results.md).

``coupling: colocated`` (opt-in; docs/reproduction-notes.md says why it is not the default) makes the second
finding cross-modal, as in reading *active* exudation: every fundus shows a grey-green membrane on the horizontal
meridian, temporal or nasal to the fovea, and every OCT B-scan (taken along that meridian) shows a dark
sub-retinal pocket, temporal or nasal.
The finding (still called ``fluid``) is present when the pocket lies beneath the membrane. Each image alone says
nothing about it; a model must read the position in one modality to know where to look in the other — the case EI's
early intervention is built for, and one an additive late fusion (concatenation → linear) cannot represent (XNOR of
the two sides). Drusen stay a fundus finding. Membrane and pocket sides are written as ``attr_membrane_side``
and ``attr_pocket_side``.

Per-sample nuisance factors
(lesion count, size, shade, shape, texture, haemorrhages, illumination, band tilt, noise) vary independently of the
class and are written as ``attr_*`` columns so that captions can describe more than the label.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medrepro.data.archives import extract
from medrepro.data.registry import DatasetAdapter, DatasetInfo, RemoteFile, register_dataset
from medrepro.errors import DataError

CLASSES = ("normal", "drusen", "fluid", "drusen_fluid")
ARCHIVE = "synth_mm.zip"
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed timestamps → byte-identical archives for the same seed

SIZES = {"small": 0.05, "medium": 0.08, "large": 0.12}
SHADES = {"yellow": (1.0, 0.85, 0.35), "white": (1.0, 0.97, 0.85), "orange": (1.0, 0.7, 0.3)}
SHAPES = {"round": 1.0, "oval": 0.6, "elongated": 0.35}
ILLUM = {"dim": 0.7, "normal": 1.0, "bright": 1.25}
TEXTURES = ("smooth", "grainy")
COUPLINGS = ("independent", "colocated")
SIDES = {"temporal": -0.45, "nasal": 0.2}  # x of the membrane / pocket on the horizontal meridian (disc at +0.5)
MEMBRANE_RGB = (0.42, 0.48, 0.34)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(ax, ax, indexing="xy")


def _ellipse(xx, yy, cx, cy, r, aspect, angle) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1]."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / r
    v = (-(xx - cx) * s + (yy - cy) * c) / (r * aspect)
    d = np.sqrt(u**2 + v**2)
    return np.clip((1.2 - d) / 0.4, 0.0, 1.0)


def render_fundus(rng: np.random.Generator, size: int, drusen: bool, fluid: bool, attrs: dict,
                  contrast: float, noise: float, leak: float) -> np.ndarray:
    """Colour en-face image (H, W, 3) uint8."""
    xx, yy = _grid(size)
    r2 = xx**2 + yy**2
    illum = ILLUM[attrs["illumination"]] * rng.uniform(0.92, 1.08)
    base = np.array([0.78, 0.36, 0.16]) * rng.uniform(0.9, 1.1, size=3)
    img = base[None, None, :] * (1 - 0.45 * r2)[..., None]
    # optic disc and vessels: anatomy present in every class
    dx, dy = 0.5 + rng.uniform(-0.05, 0.05), rng.uniform(-0.08, 0.08)
    disc = _ellipse(xx, yy, dx, dy, 0.14, 1.0, 0.0)
    img = img * (1 - disc[..., None]) + np.array([1.0, 0.9, 0.6])[None, None] * disc[..., None]
    for ang in rng.uniform(0, 2 * np.pi, size=4):
        px, py = xx - dx, yy - dy
        along = px * np.cos(ang) + py * np.sin(ang)
        across = -px * np.sin(ang) + py * np.cos(ang) + 0.08 * np.sin(3 * along + ang)
        vessel = np.clip(1 - np.abs(across) / 0.025, 0, 1) * (along > 0)
        img = img * (1 - 0.45 * vessel[..., None])
    # haemorrhages: nuisance, independent of the class
    for _ in range(attrs["haemorrhages"]):
        m = _ellipse(xx, yy, *rng.uniform(-0.6, 0.6, size=2), rng.uniform(0.03, 0.06), 1.0, 0.0)
        img = img * (1 - 0.6 * m[..., None]) + np.array([0.35, 0.02, 0.02])[None, None] * 0.6 * m[..., None]
    # drusen (finding A)
    if drusen:
        shade = np.array(SHADES[attrs["lesion_shade"]])
        for _ in range(attrs["lesion_count"]):
            cx, cy = rng.normal(-0.1, 0.25), rng.normal(0.0, 0.25)
            r = SIZES[attrs["lesion_size"]] * rng.uniform(0.8, 1.25)
            m = contrast * _ellipse(xx, yy, cx, cy, r, SHAPES[attrs["lesion_shape"]], rng.uniform(0, np.pi))
            img = img * (1 - m[..., None]) + shade[None, None] * m[..., None]
    if "membrane_side" in attrs:  # colocated: grey-green membrane on the meridian (position only, no finding)
        m = _ellipse(xx, yy, SIDES[attrs["membrane_side"]] + rng.uniform(-0.05, 0.05), rng.uniform(-0.06, 0.06),
                     0.17 * rng.uniform(0.85, 1.15), 0.75, rng.uniform(0, np.pi))
        img = img * (1 - m[..., None]) + np.array(MEMBRANE_RGB)[None, None] * m[..., None]
    # faint macular halo when fluid is present (leak of finding B; independent coupling only)
    elif fluid and leak > 0:
        halo = _ellipse(xx, yy, -0.1, 0.0, 0.3, 1.0, 0.0)
        img = img * (1 - leak * 0.5 * halo[..., None])
    img = img * illum
    if attrs["texture"] == "grainy":
        img = img * (1 + 0.12 * rng.standard_normal((size, size, 1)))
    img = img + noise * rng.standard_normal(img.shape)
    img = img * (r2 < 0.95)[..., None]  # circular field of view
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_oct(rng: np.random.Generator, size: int, drusen: bool, fluid: bool, attrs: dict,
               contrast: float, noise: float, leak: float) -> np.ndarray:
    """Grey cross-section (H, W, 1) uint8 with layered retinal bands."""
    xx, yy = _grid(size)
    tilt, curve = attrs["band_tilt"], rng.uniform(0.0, 0.25)
    surface = -0.25 + tilt * xx + curve * xx**2 + 0.02 * np.sin(5 * xx + rng.uniform(0, 6))
    depth = yy - surface  # 0 at the inner surface, increasing downwards
    lift = np.zeros_like(xx)
    colocated = "pocket_side" in attrs  # colocated: a pocket in every B-scan, on the given side
    if fluid or colocated:  # dark dome between the photoreceptor band and the RPE (finding B)
        cx = SIDES[attrs["pocket_side"]] + rng.uniform(-0.05, 0.05) if colocated else rng.uniform(-0.4, 0.4)
        w, h = attrs["fluid_width"], contrast * rng.uniform(0.12, 0.2)
        lift = h * np.clip(1 - ((xx - cx) / w) ** 2, 0, None)
    bumps = np.zeros_like(xx)
    if drusen and leak > 0:  # small RPE elevations (leak of finding A)
        for cx in rng.uniform(-0.7, 0.7, size=attrs["lesion_count"]):
            bumps += leak * 0.06 * np.exp(-(((xx - cx) / 0.05) ** 2))
    d_rpe = depth - 0.42 + bumps
    img = 0.08 + 0.0 * xx
    bands = [(0.0, 0.06, 0.75), (0.12, 0.08, 0.35), (0.26, 0.05, 0.5), (0.42, 0.045, 0.95)]
    for off, width, inten in bands:
        shift = lift if off < 0.4 else 0.0
        d = depth + shift - off if off < 0.4 else d_rpe
        img = img + inten * np.exp(-((d / width) ** 2))
    img = img + 0.25 * (depth > 0) * (depth < 0.5)  # tissue between the surfaces
    if fluid or colocated:
        pocket = (depth > 0.42 - lift) & (depth < 0.4) & (lift > 0.01)
        img = np.where(pocket, 0.05, img)
    img = img * ILLUM[attrs["illumination"]] * rng.uniform(0.9, 1.1)
    img = img * (1 + 0.35 * rng.standard_normal(img.shape))  # speckle
    img = img + noise * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None]


def sample_attributes(rng: np.random.Generator) -> dict:
    """Per-sample nuisance factors (independent of the class)."""
    return {
        "lesion_count": int(rng.integers(3, 8)),
        "lesion_size": str(rng.choice(list(SIZES))),
        "lesion_shade": str(rng.choice(list(SHADES))),
        "lesion_shape": str(rng.choice(list(SHAPES))),
        "illumination": str(rng.choice(list(ILLUM))),
        "texture": str(rng.choice(TEXTURES)),
        "haemorrhages": int(rng.integers(0, 3)),
        "band_tilt": round(float(rng.uniform(-0.15, 0.15)), 3),
        "fluid_width": round(float(rng.uniform(0.15, 0.35)), 3),
    }


def colocated_sides(rng: np.random.Generator, fluid: bool) -> dict:
    """Membrane and pocket sides for ``coupling: colocated``: the same side iff the (cross-modal) finding is present."""
    sides = list(SIDES)
    membrane = int(rng.integers(0, 2))
    return {"membrane_side": sides[membrane], "pocket_side": sides[membrane if fluid else 1 - membrane]}


def generate_synth_mm(out_zip: Path, seed: int, n_train: int, n_val: int, n_test: int, gen_size: int,
                      difficulty: float, leak: float, coupling: str = "independent") -> None:
    """Write ``synth_mm.zip`` (``synth_mm/labels.csv`` + PNGs per modality), byte-identical for a seed."""
    if coupling not in COUPLINGS:
        raise ValueError(f"data.synth_mm.coupling must be one of {COUPLINGS}, got {coupling!r}")
    rng = np.random.default_rng(seed)
    contrast = float(np.clip(1.0 - 0.6 * difficulty, 0.2, 1.0))
    noise = 0.02 + 0.1 * difficulty
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    rows = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i, split in enumerate(splits):
            sid = f"S{i:05d}"
            label = i % 4 if split != "train" else int(rng.integers(0, 4))
            drusen, fluid = bool(label & 1), bool(label & 2)
            attrs = sample_attributes(rng)
            if coupling == "colocated":
                attrs.update(colocated_sides(rng, fluid))
            images = {
                "fundus": render_fundus(rng, gen_size, drusen, fluid, attrs, contrast, noise, leak),
                "oct": render_oct(rng, gen_size, drusen, fluid, attrs, contrast, noise, leak),
            }
            for mod, arr in images.items():
                png = io.BytesIO()
                Image.fromarray(arr if arr.shape[-1] == 3 else arr[..., 0]).save(png, format="PNG")
                zf.writestr(zipfile.ZipInfo(f"synth_mm/images/{mod}/{sid}.png", _ZIP_DATE), png.getvalue())
            rows.append({"sample_id": sid, "patient_id": f"P{i:05d}", "split": split, "label": label,
                         **{f"attr_{k}": v for k, v in attrs.items()}})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        zf.writestr(zipfile.ZipInfo("synth_mm/labels.csv", _ZIP_DATE), text.getvalue())
    out_zip.write_bytes(buf.getvalue())


@register_dataset("synth_mm")
class Adapter(DatasetAdapter):
    info = DatasetInfo("synth_mm", ("fundus", "oct"), CLASSES, "multiclass", channels=(3, 1))

    def remote_files(self) -> list[RemoteFile]:
        return []  # generated locally by fetch

    def generate(self, raw_dir: Path, seed: int) -> None:
        c = self.cfg
        generate_synth_mm(raw_dir / ARCHIVE, seed, c["n_train"], c["n_val"], c["n_test"], c["gen_size"],
                          c["difficulty"], c["leak"], c.get("coupling", "independent"))

    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        extract(raw_dir / ARCHIVE, files_dir)
        labels = files_dir / "synth_mm" / "labels.csv"
        if not labels.is_file():
            raise DataError(f"label file missing from {raw_dir / ARCHIVE}: synth_mm/labels.csv")
        df = pd.read_csv(labels, dtype={"sample_id": str, "patient_id": str})
        rel = files_dir.name
        for mod in self.info.modalities:
            df[f"path_{mod}"] = [f"{rel}/synth_mm/images/{mod}/{s}.png" for s in df["sample_id"]]
        return df
