"""Multi-tower image classifiers: one timm backbone per modality, logits averaged (downstream baseline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medrepro.models.timm_factory import create_timm_model


class MultiTowerClassifier(nn.Module):
    """One classifier per modality; the prediction is the mean of the per-modality logits.

    Volumes (B, S, 3, H, W) are classified slice by slice and the slice logits mean-pooled.
    """

    def __init__(self, towers: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.towers = nn.ModuleDict(dict(towers))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = []
        for m, tower in self.towers.items():
            x = batch[m]
            if x.dim() == 5:
                b, s = x.shape[:2]
                logits.append(tower(x.flatten(0, 1)).view(b, s, -1).mean(1))
            else:
                logits.append(tower(x))
        return torch.stack(logits).mean(0)


def build_classifier(model_cfg: Mapping[str, Any], modalities: list[str], num_classes: int,
                     image_size: int) -> MultiTowerClassifier:
    """A tower per modality from the downstream model block (arch, kwargs, pretrained, weights)."""
    return MultiTowerClassifier({m: create_timm_model(model_cfg, num_classes, image_size) for m in modalities})
