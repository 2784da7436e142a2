"""Downstream classification on real-data subsets (VAP-Diffusion Sec. 3.3 → results/table3.csv rows)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrepro.data.loaders import DEFAULT_MEAN, DEFAULT_STD, CachedImages
from medrepro.data.manifest import label_matrix, load_manifest
from medrepro.data.splits import ratio_column
from medrepro.errors import DataError, ParamsError
from medrepro.models.classifier import build_classifier
from medrepro.train.artifacts import finish_run
from medrepro.train.classify import TaskData, train_classifier
from medrepro.train.devices import prepare_model, resolve_device, seed_everything
from medrepro.train.loop import fingerprint

log = logging.getLogger("medrepro")


def load_task(dataset: str, subset: str, seed: int, modalities: list[str] | None = None,
              slices: int = 4, data_root: Path = Path("data"),
              norm: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[TaskData, dict[str, Any]]:
    """Prepared images + labels with train = ``subset`` of the train split (for ``seed``), official val/test."""
    root = data_root / "prepared" / dataset
    manifest, classes = load_manifest(root)
    subsets = pd.read_parquet(data_root / "splits" / dataset / "subsets.parquet")
    if subset not in subsets.columns:
        raise DataError(f"{data_root}/splits/{dataset}/subsets.parquet has no subset column {subset!r}")
    chosen = subsets[(subsets["seed"] == seed) & subsets[subset]]["sample_id"]
    if chosen.empty:
        raise DataError(f"subset {subset!r} for seed {seed} is empty in {data_root}/splits/{dataset}/subsets.parquet")
    pos = pd.Series(np.arange(len(manifest)), index=manifest["sample_id"])
    mods = modalities or classes["modalities"]
    mean, std = norm or (DEFAULT_MEAN, DEFAULT_STD)
    images = CachedImages(root, mods, volumetric=classes.get("volumetric", False), slices=slices, mean=mean, std=std)
    data = TaskData(
        images=images,
        labels=label_matrix(manifest, classes),
        multilabel=classes["task"] == "multilabel",
        train_idx=np.sort(pos[chosen].to_numpy()),
        val_idx=np.flatnonzero(manifest["split"].to_numpy() == "val"),
        test_idx=np.flatnonzero(manifest["split"].to_numpy() == "test"),
    )
    return data, classes


def run_downstream(params: Mapping[str, Any], dataset: str, method: str, train_data: str, ratio: float,
                   models_dir: Path, ckpt_dir: Path | None = None,
                   modalities: list[str] | None = None) -> dict[str, Any]:
    """Train ``method`` on the ``ratio`` real subset (+ synthetic images per ``train_data``) for every seed.

    Saves the best weights per seed under ``models_dir`` (safetensors + params JSON) and returns the metrics record.
    """
    if train_data != "real":
        raise ParamsError(
            f"downstream.train_data {train_data!r} needs synthetic images from the synthesize stage, which this "
            "version of the workflow does not build yet; use 'real'"
        )
    ds = params["downstream"]
    cfg = ds["train"]
    model_cfg = ds["models"][method]
    device = resolve_device(params["device"])
    runs = []
    for seed in params["seeds"]:
        data, classes = load_task(dataset, ratio_column(ratio), seed, modalities, cfg.get("slices", 4))
        gen = seed_everything(seed)
        model = build_classifier(model_cfg, list(data.images.modalities), len(classes["classes"]),
                                 classes["image_size"], ds["fusion"], ds["fusion_hidden"])
        model = prepare_model(model, device, params["compile"])
        run_desc = {"dataset": dataset, "method": method, "train_data": train_data, "ratio": ratio, "seed": seed,
                    "modalities": data.images.modalities, "model": model_cfg, "train": cfg,
                    "fusion": (ds["fusion"], ds["fusion_hidden"]) if len(data.images.modalities) > 1 else None}
        run_id = fingerprint(run_desc)
        ckpt = ckpt_dir / f"seed{seed}.pt" if ckpt_dir else None
        _, record = train_classifier(model, data, cfg, gen, device, params["precision"], ckpt, run_id,
                                     desc=f"{dataset}/{method}/{train_data}/{ratio:g}/seed{seed}")
        finish_run(models_dir / f"seed{seed}.safetensors", model.state_dict(), run_desc, ckpt)
        runs.append({"seed": seed, "n_real": len(data.train_idx), "n_synthetic": 0, **record})
        log.info("%s seed %d: test %s", run_desc, seed, {k: round(v, 4) for k, v in record["test"].items()})
    return {"dataset": dataset, "method": method, "train_data": train_data, "real_ratio": ratio,
            "classes": classes["classes"], "runs": runs}
