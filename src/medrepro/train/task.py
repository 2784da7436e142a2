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
from medrepro.config import SyntheticMixConfig
from medrepro.data.loaders import DEFAULT_MEAN, DEFAULT_STD, CachedImages
from medrepro.data.manifest import label_matrix, load_manifest
from medrepro.data.splits import is_few_shot
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
    n_real: int = -1  # distinct real training samples (-1: len(train_idx))
    n_synthetic: int = 0  # synthetic training samples (after the real rows of ``images``)
    fixed_schedule: bool = False  # no model selection: every epoch runs, the last is scored (K-shot runs)

    def __post_init__(self) -> None:
        if self.n_real < 0:
            self.n_real = int(len(self.train_idx))

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
                x = augment(x.flatten(0, x.dim() - 4), aug, gen, self.images.norm).view(shape)
            out[m] = x.to(device, non_blocking=True)
        return out


def load_task(dataset: str, subset: str, seed: int, modalities: list[str] | None, slices: int,
              data_root: Path = layout.DATA,
              norm: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[TaskData, Mapping[str, Any]]:
    """Prepared images + labels with train = ``subset`` of the train split (for ``seed``), official val/test.

    A K-shot subset (``shot_K``) may see K labelled images per class in all, so it gets no validation split: its
    runs train on a fixed schedule and score the last epoch (``fixed_schedule``); no validation label is read."""
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
    few_shot = is_few_shot(subset)
    data = TaskData(
        images=images,
        labels=label_matrix(manifest, classes),
        multilabel=classes["task"] == "multilabel",
        train_idx=np.sort(pos[chosen].to_numpy()),
        val_idx=np.flatnonzero(manifest["split"].to_numpy() == "val") if not few_shot else np.zeros(0, np.int64),
        test_idx=np.flatnonzero(manifest["split"].to_numpy() == "test"),
        sample_ids=manifest["sample_id"].astype(str).to_numpy(),
        fixed_schedule=few_shot,
    )
    return data, classes


def add_synthetic(data: TaskData, root: Path, seed: int, per_class: int, real_fraction: float | None,
                  num_classes: int) -> TaskData:
    """``data`` with the first ``per_class`` synthetic samples of every class (seed ``seed``) of the set at ``root``
    (``medrepro.vap.synthesize``) added to its train split (VAP-Diffusion Sec. 3.3). ``real_fraction``: None =
    the union; else the real samples repeat to about that share of every epoch."""
    manifest_file = root / "manifest.parquet"
    if not manifest_file.is_file():
        raise DataError(f"synthetic set missing: {manifest_file} (run the synthesize stage)")
    manifest = pd.read_parquet(manifest_file)
    rows = manifest[manifest["seed"] == seed]
    chosen = rows.groupby("label", sort=True).head(per_class)
    short = {int(k): int(n) for k, n in chosen["label"].value_counts().items() if n < per_class}
    missing = sorted(set(range(num_classes)) - set(chosen["label"].astype(int)))
    if short or missing:
        raise DataError(f"{manifest_file}: seed {seed} has fewer than {per_class} synthetic samples for classes "
                        f"{sorted(short) + missing} (downstream.synthetic.per_class is above synthesis.per_class?)")
    syn = CachedImages(root, data.images.modalities, volumetric=False, slices=data.images.slices)
    syn.mean, syn.std = data.images.mean, data.images.std
    base = len(data.labels)
    labels = manifest["label"].to_numpy(np.int64)  # every cached synthetic row; train_idx picks the chosen ones
    syn_labels = np.eye(data.labels.shape[1], dtype=data.labels.dtype)[labels] if data.multilabel else labels
    syn_idx = base + np.flatnonzero(manifest.index.isin(chosen.index))  # cache rows follow manifest rows
    real_idx = data.train_idx
    if real_fraction is not None:  # real rows repeated so that they make about real_fraction of an epoch
        reps = max(1, round(real_fraction * len(syn_idx) / ((1 - real_fraction) * len(real_idx))))
        real_idx = np.tile(real_idx, reps)
    return TaskData(
        images=data.images.concat(syn), labels=np.concatenate([data.labels, syn_labels.astype(data.labels.dtype)]),
        multilabel=data.multilabel, train_idx=np.concatenate([real_idx, syn_idx]), val_idx=data.val_idx,
        test_idx=data.test_idx,
        sample_ids=None if data.sample_ids is None else np.concatenate(
            [data.sample_ids, manifest["sample_id"].astype(str).to_numpy()]),
        n_real=data.n_real, n_synthetic=len(syn_idx), fixed_schedule=data.fixed_schedule)



def load_training_task(dataset: str, train_data: str, ratio_subset: str, seed: int, modalities: list[str] | None,
                       slices: int, mix: SyntheticMixConfig, norm: tuple[Sequence[float], Sequence[float]] | None = None
                       ) -> tuple[TaskData, Mapping[str, Any]]:
    """``load_task`` for ``train_data``: the real subset, plus the synthetic set of ``real+syn_<generator>``."""
    data, classes = load_task(dataset, ratio_subset, seed, modalities, slices, norm=norm)
    generator = layout.synthetic_generator(train_data)
    if generator is not None:
        data = add_synthetic(data, layout.synthetic(dataset, generator), seed, mix.per_class, mix.real_fraction,
                             len(classes["classes"]))
    return data, classes
