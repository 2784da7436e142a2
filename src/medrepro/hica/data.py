"""HiCA's training data: the image task of one subset, each sample's caption embedding, and the class descriptors.

- Captions: the ``caption`` stage's t_mix of every modality image of a sample, each embedded alone (a joined text
  would be cut by the text tower's token limit), their mean the sample's fine-grained descriptor (Eq. 4's t_i,k
  for each of its ROIs).
- Class descriptors (Eq. 1's t_j): a class-name template plus the captions of the run's labelled training samples
  of that class. Only the subset's labels are used: a K-shot run never sees another training sample's class (the
  VAP prompt bank groups all training captions by class, which would leak labels into few-shot runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrepro import layout
from medrepro.diffusion.text import TextTower
from medrepro.errors import DataError
from medrepro.hica.text import class_template, sentence_embeddings
from medrepro.models.hica import CAPTION
from medrepro.train.task import TaskData


@dataclass
class CaptionedTaskData(TaskData):
    """``TaskData`` whose training batches also carry each sample's caption embedding (batch key ``CAPTION``)."""

    captions: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (N, D) sentence embeddings

    def inputs(self, idx: np.ndarray, device: torch.device, train: bool, gen: torch.Generator | None,
               aug: Any | None) -> dict[str, torch.Tensor]:
        out = super().inputs(idx, device, train, gen, aug)
        if train:
            out[CAPTION] = self.captions[torch.from_numpy(np.asarray(idx))].to(device)
        return out


def sample_captions(dataset: str, sample_ids: np.ndarray, modalities: list[str]) -> list[list[str]]:
    """Each sample's t_mix of every modality (in modality order); every one must exist."""
    path = layout.captions(dataset)
    if not path.is_file():
        raise DataError(f"captions missing: {path} (run the caption stage)")
    caps = pd.read_parquet(path)
    table = caps.pivot_table(index="sample_id", columns="modality", values="t_mix", aggfunc="first")
    lacking = [s for s in sample_ids if s not in table.index]
    if lacking:
        raise DataError(f"{path}: no caption for training sample {lacking[0]!r} ({len(lacking)} missing; is its "
                        "split in captions.splits?)")
    rows = table.loc[list(sample_ids)]
    return [[str(rows.at[s, m]) for m in modalities if m in rows.columns] for s in sample_ids]


def class_descriptors(names: list[str], labels: np.ndarray,
                      captions: list[list[str]]) -> tuple[list[str], list[list[int]], list[list[int]]]:
    """All descriptor texts; per class the indices of its own (its template, then its samples' captions, one per
    modality); per sample the indices of its captions."""
    texts = [class_template(n) for n in names]
    groups = [[k] for k in range(len(names))]
    per_sample = []
    for caps, y in zip(captions, labels, strict=True):
        rows = list(range(len(texts), len(texts) + len(caps)))
        groups[int(y)] += rows
        per_sample.append(rows)
        texts += caps
    return texts, groups, per_sample


def attach_captions(data: TaskData, dataset: str, names: list[str], tower: TextTower,
                    noise: Callable[[list[str]], list[str]] | None = None
                    ) -> tuple[CaptionedTaskData, list[str], list[list[int]], torch.Tensor]:
    """``data`` with its training samples' caption embeddings; the descriptor texts, groups and embeddings.
    ``noise`` corrupts the captions (Table V) before they become descriptors."""
    if data.multilabel:
        raise DataError(f"{dataset}: HiCA classifies one class per image; {dataset} is multi-label")
    ids = data.sample_ids[data.train_idx]
    caps = sample_captions(dataset, ids, list(data.images.modalities))
    if noise is not None:  # corrupt the flat list of captions, then regroup per sample
        flat = noise([c for cs in caps for c in cs])
        bounds = np.cumsum([0] + [len(cs) for cs in caps])
        caps = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    texts, groups, rows = class_descriptors(names, data.labels[data.train_idx], caps)
    emb = sentence_embeddings(tower, texts)
    per_sample = torch.zeros(len(data.labels), emb.shape[1])
    # a sample's fine-grained descriptor: the mean of its modalities' caption embeddings (each embedded alone, so
    # no caption is cut by the text tower's token limit)
    per_sample[torch.from_numpy(data.train_idx)] = torch.stack([emb[r].mean(0) for r in rows])
    fields = {f: getattr(data, f) for f in TaskData.__dataclass_fields__}
    return CaptionedTaskData(**fields, captions=per_sample), texts, groups, emb
