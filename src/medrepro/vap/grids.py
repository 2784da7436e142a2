"""Sample grids of synthetic images beside real ones, for people to look at (results/plots/synthetic/)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medrepro.data.cache import open_cache  # noqa: E402
from medrepro.data.manifest import load_manifest  # noqa: E402
from medrepro.io import atomic_path  # noqa: E402

REAL_PER_ROW = 4


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def sample_grid(prepared: Path, manifest: pd.DataFrame, images: dict[str, np.ndarray], classes: list[str],
                modalities: list[str], per_class: int, path: Path, title: str) -> None:
    """One row per (class, modality): ``REAL_PER_ROW`` real training images, a gap, then ``per_class`` synthetic
    ones of the first seed (paired samples share a column across a class's modality rows)."""
    real_manifest, _ = load_manifest(prepared)
    first_seed = manifest["seed"].min()
    rows, labels = [], []
    for k, name in enumerate(classes):
        real_idx = np.flatnonzero(((real_manifest["label"] == k) & (real_manifest["split"] == "train")).to_numpy())
        syn_idx = np.flatnonzero(((manifest["label"] == k) & (manifest["seed"] == first_seed)).to_numpy())[:per_class]
        for m in modalities:
            frames, offsets = open_cache(prepared, m)
            real = [_rgb(np.asarray(frames[offsets[i]])) for i in real_idx[:REAL_PER_ROW]]
            syn = [_rgb(images[m][i]) for i in syn_idx]
            h, w = (real or syn)[0].shape[:2]
            blank = np.full((h, w, 3), 255, np.uint8)
            cells = (real + [blank] * (REAL_PER_ROW - len(real)) + [np.full((h, w // 4, 3), 255, np.uint8)]
                     + syn + [blank] * (per_class - len(syn)))
            rows.append(np.concatenate(cells, axis=1))
            labels.append(f"{name} · {m}")
    rows = [np.pad(r, ((0, 2), (0, 0), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, axis=0)
    scale = max(1.0, 96 / rows[0].shape[0])
    fig, ax = plt.subplots(figsize=(grid.shape[1] * scale / 50 + 2, grid.shape[0] * scale / 50 + 0.6), dpi=100)
    ax.imshow(grid, interpolation="nearest")
    step = rows[0].shape[0]
    ax.set_yticks([step * i + step / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_xticks([])
    ax.set_title(f"{title}: real (left) | synthetic (right)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
