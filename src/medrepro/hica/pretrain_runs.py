"""Stage hica_pretrain's library: HiCA stage 1 per (dataset, seed) — image towers fine-tuned on k-means
pseudo-labels, the text encoder fine-tuned with SimCSE on the captions (``medrepro.hica.pretrain``).

Writes ``models/hica_pretrain/<dataset>/seed<k>/<modality>.safetensors`` (timm ViT state, no head; with
``hica.clip`` the open_clip image tower's state) with its description, and ``seed<k>/text/`` (the fine-tuned encoder
as a transformers folder; not with ``hica.clip``, whose text tower stays as shipped), which stage 2 loads.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config
from medrepro.data.loaders import CachedImages
from medrepro.data.manifest import load_manifest
from medrepro.devices import peak_mem_mb, resolve_device, seed_everything
from medrepro.errors import DataError, ParamsError
from medrepro.hica.pretrain import (
    PretrainConfig,
    finetune_on_pseudo_labels,
    kmeans_labels,
    simcse_finetune,
    tower_features,
)
from medrepro.io import atomic_path, write_json
from medrepro.models.backbones import build_vit, normalization
from medrepro.models.clip_towers import clip_normalization, configured_clip, image_towers
from medrepro.models.text import bundled_minilm
from medrepro.train.artifacts import finish_run
from medrepro.train.loop import fingerprint

log = logging.getLogger("medrepro")


def text_folder(dataset: str, seed: int) -> Any:
    """The stage-1 text encoder of ``seed`` (a transformers folder)."""
    return layout.hica_pretrain(dataset).models / f"seed{seed}" / "text"


def pretrain_config(cfg: Config) -> PretrainConfig:
    p = {k: v for k, v in cfg.hica.pretrain.items() if k != "enabled"}
    return PretrainConfig(**p, max_tokens=cfg.hica.text["max_tokens"])


def run_hica_pretrain(cfg: Config, dataset: str) -> dict[str, Any]:
    """Stage 1 for every seed of ``dataset``; the metrics JSON (pseudo-label NMI as a diagnostic, losses, speed)."""
    t0 = time.perf_counter()
    text, (clip_cfg, clip) = cfg.hica.text, configured_clip(cfg.hica.clip)
    if clip_cfg is None and text["kind"] != "minilm":
        raise ParamsError(f"hica.text.kind {text['kind']!r}: stage 1's SimCSE fine-tunes a transformers encoder "
                          "(kind minilm with model: a local folder or cached hub id)")
    pcfg, device, paths = pretrain_config(cfg), resolve_device(cfg.device), layout.hica_pretrain(dataset)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    prepared = layout.prepared(dataset)
    manifest, classes = load_manifest(prepared)
    rows = np.flatnonzero(manifest["split"].to_numpy() == "train")
    tower = {**cfg.ei.tower(layout.VFM_WEIGHTS), "img_size": int(classes["image_size"]), "num_classes": 0}
    mean, std = clip_normalization(clip) if clip is not None else normalization(tower)
    images = CachedImages(prepared, list(classes["modalities"]), volumetric=bool(classes.get("volumetric")),
                          mean=mean, std=std)
    caps = pd.read_parquet(layout.captions(dataset))
    corpus = caps.loc[caps["sample_id"].isin(set(manifest["sample_id"].iloc[rows])), "t_mix"].astype(str).tolist()
    if not corpus:
        raise DataError(f"{layout.captions(dataset)} has no caption of a training image (run the caption stage)")
    runs = []
    for seed in cfg.seeds:
        for m in classes["modalities"]:
            gen = seed_everything(seed)
            vit = image_towers(clip, [m])[m] if clip is not None else build_vit(tower)
            pseudo = kmeans_labels(tower_features(vit, images, m, rows, device), pcfg.clusters, seed)
            from sklearn.metrics import normalized_mutual_info_score  # ~1 s import, used once

            nmi = float(normalized_mutual_info_score(manifest["label"].to_numpy()[rows], pseudo))
            desc = {"builder": "clip_visual" if clip is not None else "vit", "dataset": dataset, "modality": m,
                    "seed": seed, "tower": clip_cfg or tower, "pretrain": vars(pcfg)}
            fit = finetune_on_pseudo_labels(vit, images, m, rows, pseudo, pcfg, gen, device, cfg.precision,
                                            paths.checkpoint(seed, m), fingerprint(desc),
                                            f"{dataset}/hica stage 1/{m}/seed{seed}")
            finish_run(paths.weights(seed, m), vit.cpu().state_dict(), desc, paths.checkpoint(seed, m))
            runs.append({"seed": seed, "modality": m, "n_images": len(rows), "clusters": pcfg.clusters,
                         "pseudo_label_nmi": nmi, "history": fit.history, "samples_per_s": fit.samples_per_s,
                         "train_s": fit.train_s})
            log.info("%s/%s seed %d: k-means NMI vs labels %.3f (diagnostic), final loss %.3f", dataset, m, seed,
                     nmi, fit.history[-1]["loss"])
        if clip is not None:  # CLIP's text tower stays as shipped: it is the half of the pair the image tower
            continue          # was aligned to (docs/hica.md)
        model, tokenizer, text_record = simcse_finetune(text["model"] or bundled_minilm(), corpus, pcfg, seed, device)
        with atomic_path(text_folder(dataset, seed), is_dir=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        runs.append({"seed": seed, "modality": "text", **text_record})
    record = {"dataset": dataset, "classes": classes["classes"], "modalities": classes["modalities"],
              "pretrain": vars(pcfg), "runs": runs, "peak_mem_mb": peak_mem_mb(device),
              "wall_s": time.perf_counter() - t0}
    write_json(paths.metrics, record)
    return record
