"""HiCA's per-sample explanations (the material of the paper's Table III human rating, which this workflow cannot
run): for test samples of every class, each modality's image with its ROIs, the descriptor each ROI is most similar
to in the shared space, and the class scores.

The descriptors are those of the trained run (class-name templates and the captions of its labelled samples),
rebuilt from the same subset and seed; the model is the run's saved weights (``hica.runs.load_hica``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrepro import layout
from medrepro.config import Config
from medrepro.hica.data import attach_captions
from medrepro.hica.methods import METHOD
from medrepro.hica.runs import hica_inputs, load_hica
from medrepro.io import atomic_path
from medrepro.models.hica_losses import cosine
from medrepro.models.hica_rois import crops


def pick_samples(labels: np.ndarray, idx: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` test samples of every class (fewer where a class has fewer), seeded."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(idx[labels[idx] == k], size=min(per_class, int((labels[idx] == k).sum())), replace=False)
              for k in np.unique(labels[idx])]
    return np.concatenate(chosen)


@torch.no_grad()
def explain(cfg: Config, dataset: str, subset: str, seed: int, per_class: int) -> list[dict[str, Any]]:
    """One record per chosen test sample: images, boxes, each ROI's best descriptor and similarity, class scores."""
    data, names, _, setup = hica_inputs(cfg, dataset, subset, seed)
    data, texts, _, sentences = attach_captions(data, dataset, names, setup.text_tower)
    model, _ = load_hica(layout.hica(dataset, METHOD, subset).weights(seed))
    z_text = model.embed_text(sentences)
    rows = pick_samples(data.labels, data.test_idx, per_class, seed)
    batch = data.inputs(rows, torch.device("cpu"), False, None, None)
    scores = model(batch).softmax(-1).numpy()
    out = []
    for i, row in enumerate(rows):
        record = {"sample_id": str(data.sample_ids[row]), "label": names[int(data.labels[row])],
                  "scores": dict(zip(names, scores[i].tolist(), strict=True)), "modalities": {}}
        for m in model.modalities:
            x = batch[m][i]
            boxes = model.boxes(x.float().mean(0).numpy())
            patches, valid = crops(x, boxes, len(boxes), model.roi_size)
            sims = cosine(model.tower_embed(m, patches[valid]), z_text)
            best = sims.argmax(1)
            frame = data.images.frame_index(m, np.array([row]), False, None).reshape(-1)[0]
            image = data.images.cache[m].frames[frame]
            record["modalities"][m] = {"image": np.asarray(image), "boxes": boxes,
                                       "descriptors": [texts[int(j)] for j in best],
                                       "similarity": sims.max(1).values.tolist()}
        out.append(record)
    return out


def plot_explanations(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """A figure: a row per sample, one panel per modality (image + numbered ROIs), then the ROI descriptors and
    the class scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    mods = list(records[0]["modalities"])
    fig, axes = plt.subplots(len(records), len(mods) + 2, figsize=(4 * (len(mods) + 2), 3 * len(records)),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * len(mods) + [2.5, 1.2]})
    for r, rec in enumerate(records):
        notes = []
        for c, m in enumerate(mods):
            ax, info = axes[r][c], rec["modalities"][m]
            img = info["image"]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
            for k, (y0, x0, y1, x1) in enumerate(info["boxes"]):
                ax.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="red"))
                ax.text(x0, y0, str(k + 1), color="yellow", fontsize=8, va="bottom")
                notes.append(f"{m} ROI {k + 1} (sim {info['similarity'][k]:.2f}): "
                             + textwrap.shorten(info["descriptors"][k], 90))
            ax.set_title(f"{rec['sample_id']} · {m}" + (f" · {rec['label']}" if c == 0 else ""), fontsize=8)
            ax.axis("off")
        text_ax = axes[r][len(mods)]
        text_ax.axis("off")
        text_ax.text(0, 1, "\n".join(textwrap.fill(n, 70) for n in notes), fontsize=6, va="top", family="monospace")
        bars = axes[r][len(mods) + 1]
        bars.barh(list(rec["scores"]), list(rec["scores"].values()),
                  color=["tab:green" if k == rec["label"] else "tab:gray" for k in rec["scores"]])
        bars.set_xlim(0, 1)
        bars.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def run_hica_explain(cfg: Config, dataset: str) -> Path:
    """``results/plots/hica/<dataset>_explanations.png`` for the first seed's run on ``hica.explain.subset``."""
    e = cfg.hica.explain
    records = explain(cfg, dataset, e["subset"], cfg.seeds[0], e["per_class"])
    path = layout.hica_explanations(dataset)
    plot_explanations(records, path, f"{dataset} · HiCA · {e['subset']} · seed {cfg.seeds[0]}")
    return path
