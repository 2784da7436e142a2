"""One run's data: a prepared dataset's cached images and labels with its train subset and official val/test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrepro import layout
from medrepro.data.loaders import DEFAULT_MEAN, DEFAULT_STD, CachedImages
from medrepro.data.manifest import label_matrix, load_manifest
from medrepro.errors import DataError
from medrepro.train.augment import augment


@dataclass
class TaskData:
    """Images and labels of one prepared dataset with the index sets of a run."""

    images: CachedImages
    labels: np.ndarray  # (N,) int or (N, K) 0/1
    multilabel: bool
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    sample_ids: np.ndarray | None = None  # (N,) manifest sample ids (predictions name their samples by them)

    def targets(self, idx: np.ndarray, device: torch.device) -> torch.Tensor:
        y = torch.from_numpy(self.labels[idx]).to(device)
        return y.float() if self.multilabel else y

    def inputs(self, idx: np.ndarray, device: torch.device, train: bool, gen: torch.Generator | None,
               aug: Any | None) -> dict[str, torch.Tensor]:
        batch = self.images.batch(idx, train=train, gen=gen)
        out = {}
        for m, x in batch.items():
            if train and aug:
                shape = x.shape
                x = augment(x.flatten(0, x.dim() - 4), aug, gen).view(shape)
            out[m] = x.to(device, non_blocking=True)
        return out


def load_task(dataset: str, subset: str, seed: int, modalities: list[str] | None, slices: int,
              data_root: Path = layout.DATA,
              norm: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[TaskData, Mapping[str, Any]]:
    """Prepared images + labels with train = ``subset`` of the train split (for ``seed``), official val/test."""
    root = layout.prepared(dataset, data_root)
    manifest, classes = load_manifest(root)
    subsets_file = layout.subsets(dataset, data_root)
    subsets = pd.read_parquet(subsets_file)
    if subset not in subsets.columns:
        raise DataError(f"{subsets_file} has no subset column {subset!r}")
    chosen = subsets[(subsets["seed"] == seed) & subsets[subset]]["sample_id"]
    if chosen.empty:
        raise DataError(f"subset {subset!r} for seed {seed} is empty in {subsets_file}")
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
        sample_ids=manifest["sample_id"].astype(str).to_numpy(),
    )
    return data, classes
