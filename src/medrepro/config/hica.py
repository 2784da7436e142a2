"""The dataclass of the ``hica`` block (HiCA: stage train_hica, its baselines and tables)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medrepro.config.shared import TrainConfig


@dataclass(frozen=True)
class HiCAConfig:
    """HiCA (stage train_hica): subsets, the shared space, the frozen text encoder, Eq. 2-5, ROIs, protocol."""

    datasets: tuple[str, ...]
    subsets: tuple[str, ...]
    embed_dim: int
    text: dict[str, Any]  # medrepro.models.text.TextTowerConfig
    clip: dict[str, Any]  # model, weights: both towers from one open_clip model (model null: ei.vfm + text)
    loss: dict[str, Any]  # medrepro.models.hica.HiCALossConfig
    rois: dict[str, Any]  # medrepro.models.hica_rois.RoiConfig
    roi_size: int
    roi_source: str  # cache | full: ROI crops from the classifier's cache or the hica_roi_images stage's copy
    roi_image_size: int  # px of that copy (a whole multiple of each HiCA dataset's image_size)
    pretrain: dict[str, Any]  # stage 1: enabled + medrepro.hica.pretrain.PretrainConfig
    zeroshot: dict[str, Any]  # epochs, lr, batch_size of the zero-shot baseline's head alignment
    baselines: dict[str, str]  # cnn, transfer: downstream.models keys; transfer_source: synthetic | given
    ablations: tuple[str, ...]
    ablation_subsets: tuple[str, ...]
    unseen: dict[str, Any]  # classes held out of training (Table IV) and the subset trained on
    noise: dict[str, Any]  # Table V: rate, terms, subset
    explain: dict[str, Any]  # the explanation figure: subset, per_class
    train: TrainConfig
