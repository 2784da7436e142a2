"""HiCA's training data: the image task of one subset, each sample's caption embedding, and the class descriptors.

- Captions: the ``caption`` stage's t_mix of every modality image of a sample, each embedded alone (a joined text
  would be cut by the text tower's token limit), their mean the sample's fine-grained descriptor (Eq. 4's t_i,k
  for each of its ROIs).
- Class descriptors (Eq. 1's t_j): a class-name template plus the captions of the run's labelled training samples
  of that class. Only the subset's labels are used: a K-shot run never sees another training sample's class (the
  VAP prompt bank groups all training captions by class, which would leak labels into few-shot runs).
- Lesion masks (``attach_masks``): where ``hica.rois.mode`` is ``mask``, or ``auto`` and the manifest has a mask
  column (BUSI's ``path_mask``), each training sample's mask is read, resized to the cached image (nearest: the
  cache squashes every image to a square the same way) and carried through augmentation with its image
  (``medrepro.train.augment.augment_with_masks``), so the mask ROIs (``medrepro.models.hica_rois``) land on the lesion
  of the augmented image.
- ROI image copies (``attach_roi_images``, ``hica.roi_source: full``): each training batch also carries the same
  samples from the ROI image cache (``medrepro.hica.roi_images``), augmented with the same draws (a clone of the
  batch's generator; shifts scaled), so the boxes found on the augmented image fall on the same content of its
  larger copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from medrepro import layout
from medrepro.data.loaders import CachedImages
from medrepro.data.manifest import load_manifest
from medrepro.errors import DataError, ParamsError
from medrepro.hica.roi_images import open_roi_images
from medrepro.hica.text import class_template, sentence_embeddings
from medrepro.models.hica import CAPTION, has_mask_key, mask_key, roi_image_key
from medrepro.models.hica_rois import RoiConfig
from medrepro.models.text import TextTower
from medrepro.train.augment import augment_with_masks
from medrepro.train.task import TaskData


@dataclass
class CaptionedTaskData(TaskData):
    """``TaskData`` whose training batches also carry each sample's caption embedding (batch key ``CAPTION``) and,
    where ``masks`` holds a modality, its lesion masks augmented with the images (``mask_key``, ``has_mask_key``),
    and with ``roi_images`` each modality's larger copy augmented alike (``roi_image_key``)."""

    captions: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (N, D) sentence embeddings
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N, H, W) uint8 0/1 (training rows)
    has_mask: dict[str, np.ndarray] = field(default_factory=dict)  # modality → (N,) bool
    roi_images: CachedImages | None = None  # hica.roi_source full: the ROI image cache (same rows)

    def inputs(self, idx: np.ndarray, device: torch.device, train: bool, gen: torch.Generator | None,
               aug: Any | None) -> dict[str, torch.Tensor]:
        extra = self.masks or self.roi_images is not None
        out = self._masked_inputs(idx, device, gen, aug) if train and extra else super().inputs(
            idx, device, train, gen, aug)
        if train:
            out[CAPTION] = self.captions[torch.from_numpy(np.asarray(idx))].to(device)
        return out

    def _masked_inputs(self, idx: np.ndarray, device: torch.device, gen: torch.Generator | None,
                       aug: Any | None) -> dict[str, torch.Tensor]:
        """``TaskData.inputs`` of a training batch (the same random draws) plus each modality's augmented masks
        and ROI image copy."""
        out = {}
        big = self.roi_images.batch(idx) if self.roi_images is not None else {}
        for m, x in self.images.batch(idx, train=True, gen=gen).items():
            mask = torch.from_numpy(self.masks[m][idx]).unsqueeze(1).float() if m in self.masks else None
            hi = big.get(m)
            if aug:
                if hi is not None:  # the same draws as the image's: a clone of the generator before them
                    if gen is None:
                        gen = torch.Generator().manual_seed(int(torch.randint(1 << 62, (1,))))
                    twin = torch.Generator()
                    twin.set_state(gen.get_state())
                    hi, _ = augment_with_masks(hi, None, aug, twin, self.images.norm, scale=hi.shape[-1] // x.shape[-1])
                x, mask = augment_with_masks(x, mask, aug, gen, self.images.norm)
            out[m] = x.to(device, non_blocking=True)
            if hi is not None:
                out[roi_image_key(m)] = hi.to(device, non_blocking=True)
            if mask is not None:  # stays on the CPU: the ROI boxes are found there
                out[mask_key(m)] = mask[:, 0] > 0.5
                out[has_mask_key(m)] = torch.from_numpy(self.has_mask[m][idx])
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


def mask_column(manifest: pd.DataFrame, modality: str, modalities: list[str]) -> str | None:
    """The manifest column of ``modality``'s lesion masks: ``path_mask_<modality>``, or ``path_mask`` on a dataset
    of one modality; None when it has none."""
    for col in (f"path_mask_{modality}", "path_mask" if len(modalities) == 1 else None):
        if col is not None and col in manifest.columns and manifest[col].notna().any():
            return col
    return None


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 0/1 mask of the file at ``path`` resized (nearest) to ``size`` = (H, W)."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L").resize(size[::-1], Image.Resampling.NEAREST))
    except (OSError, ValueError) as exc:
        raise DataError(f"corrupt or unreadable mask {path}: {exc}") from exc
    return (arr > 0).astype(np.uint8)


def attach_masks(data: CaptionedTaskData, dataset: str, rois: RoiConfig) -> CaptionedTaskData:
    """``data`` with its training samples' lesion masks where the ROI mode uses them (``mask``; ``auto`` when the
    dataset has masks). Mode ``mask`` on a dataset, or a training sample, without a mask is a ParamsError."""
    if rois.mode not in ("mask", "auto"):
        return data
    root = layout.prepared(dataset)
    manifest, _ = load_manifest(root)
    modalities = list(data.images.modalities)
    masks, has = {}, {}
    for m in modalities:
        col = mask_column(manifest, m, modalities)
        if col is None:
            if rois.mode == "mask":
                raise ParamsError(f"hica.rois.mode mask: dataset {dataset} has no lesion masks for modality {m!r} "
                                  f"(no path_mask column in {root / 'manifest.parquet'}); use auto, components or "
                                  "grid")
            continue
        paths = manifest[col].to_numpy()
        present = np.array([isinstance(p, str) and bool(p) for p in paths])
        lacking = [i for i in data.train_idx if not present[i]]
        if lacking and rois.mode == "mask":
            raise ParamsError(f"hica.rois.mode mask: training sample {manifest['sample_id'].iloc[lacking[0]]!r} of "
                              f"dataset {dataset} has no mask ({len(lacking)} such); use auto, components or grid")
        size = data.images.cache[m].frames.shape[1:3]
        masks[m] = np.zeros((len(manifest), *size), dtype=np.uint8)
        for i in data.train_idx:
            if present[i]:
                masks[m][i] = read_mask(root / paths[i], size)
        has[m] = present
    return dataclasses.replace(data, masks=masks, has_mask=has) if masks else data


def attach_roi_images(data: CaptionedTaskData, dataset: str, source: str, size: int) -> CaptionedTaskData:
    """``data`` whose training batches carry the ROI image copies (``hica.roi_source`` full, ``size`` px from the
    hica_roi_images stage); unchanged with ``cache``."""
    if source == "cache":
        return data
    if source != "full":
        raise ParamsError(f"hica.roi_source must be cache or full, got {source!r}")
    return dataclasses.replace(data, roi_images=open_roi_images(layout.hica_roi_images(dataset), size, data.images))
