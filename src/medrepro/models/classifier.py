"""Multi-tower image classifiers: one timm backbone per modality (downstream baseline).

Two ways to join the modalities (``downstream.fusion``):

- ``mean_logits``: every tower is a full timm classifier; the prediction is the mean of the per-modality logits
  (additive, i.e. late fusion of decisions).
- ``mlp``: every tower is the timm backbone without its head (pooled features); the features are concatenated and
  classified by a 2-layer MLP (Linear → GELU → Linear). Unlike any additive rule, this can represent an interaction
  between modalities, e.g. synth_mm's ``colocated`` finding (docs/reproduction-notes.md).

One modality: the timm classifier itself, whatever ``fusion`` says. Volumes (B, S, 3, H, W) are run slice by slice
and the slice outputs (logits or features) mean-pooled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medrepro.models.slices import SLICE_POOLS, pool_slices
from medrepro.models.timm_factory import create_timm_model

FUSIONS = ("mean_logits", "mlp")


def _per_slice(tower: nn.Module, x: torch.Tensor, pool: str) -> torch.Tensor:
    """Tower output for images (B, ...) or slice stacks (B, S, ...) pooled over slices by ``pool``."""
    if x.dim() == 5:
        return pool_slices(tower(x.flatten(0, 1)), x.shape[1], pool)
    return tower(x)


class MultiTowerClassifier(nn.Module):
    """One timm tower per modality joined by ``head``: None = mean of the towers' logits, else features → head."""

    def __init__(self, towers: Mapping[str, nn.Module], head: nn.Module | None = None,
                 slice_pool: str = "mean") -> None:
        super().__init__()
        if slice_pool not in SLICE_POOLS:
            raise ValueError(f"slice pooling must be one of {SLICE_POOLS}, got {slice_pool!r}")
        self.towers = nn.ModuleDict(dict(towers))
        self.head = head
        self.slice_pool = slice_pool

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        outs = [_per_slice(tower, batch[m], self.slice_pool) for m, tower in self.towers.items()]
        if self.head is None:
            return torch.stack(outs).mean(0)
        return self.head(torch.cat(outs, dim=1))


def build_classifier(model_cfg: Mapping[str, Any], modalities: list[str], num_classes: int, image_size: int,
                     fusion: str = "mean_logits", hidden: int = 256) -> MultiTowerClassifier:
    """A tower per modality from the downstream model block (arch, kwargs, pretrained, weights), joined by fusion."""
    if fusion not in FUSIONS:
        raise ValueError(f"downstream.fusion must be one of {FUSIONS}, got {fusion!r}")
    if fusion == "mean_logits" or len(modalities) == 1:
        return MultiTowerClassifier({m: create_timm_model(model_cfg, num_classes, image_size) for m in modalities})
    towers = {m: create_timm_model(model_cfg, 0, image_size) for m in modalities}
    dim = sum(t.num_features for t in towers.values())
    head = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))  # late fusion, MLP
    return MultiTowerClassifier(towers, head)
