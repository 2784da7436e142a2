"""Dataclasses of the EI paper's ``ei`` block: the VFM and its pretraining, the [INT] knobs, baselines, tables."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from medrepro.config.ablation import parse_ablation
from medrepro.config.shared import ModelConfig


@dataclass(frozen=True)
class VFMPretrainConfig:
    domain: str
    pool_size: int
    seed: int
    gen_size: int
    image_size: int
    difficulty: float
    leak: float
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float


@dataclass(frozen=True)
class BaselineConfig:
    fusion: str
    adapter: str


@dataclass(frozen=True)
class EIConfig:
    datasets: tuple[str, ...]
    vfm: ModelConfig
    vfm_source: str
    vfm_pretrain: VFMPretrainConfig
    adapter: str
    int_layer: int | None
    insert_layer: int
    lambda_aa: float
    lambda_ag: float
    detach_fusion: bool
    slice_pool: str
    int_scale: str
    intervention: bool
    ablations: tuple[str, ...]
    baselines: dict[str, BaselineConfig]
    table3_methods: tuple[str, ...]
    table7_methods: tuple[str, ...]
    table8_methods: tuple[str, ...]

    #: the ``ei`` keys a multimodal training run depends on (dvc.yaml lists the same ones as the stages' params)
    KNOBS = ("vfm", "adapter", "int_layer", "insert_layer", "lambda_aa", "lambda_ag", "detach_fusion", "slice_pool",
             "int_scale", "intervention")

    def knobs(self) -> dict[str, Any]:
        """The values of ``KNOBS`` as plain JSON-able values (saved with every multimodal run)."""
        return {k: (v.as_dict() if isinstance(v, ModelConfig) else v)
                for k, v in ((k, getattr(self, k)) for k in self.KNOBS)}

    def tower(self, weights: str | os.PathLike) -> dict[str, Any]:
        """The image-tower config every EI-paper training uses: ``ei.vfm`` loaded from the ``vfm`` stage's file."""
        return {**self.vfm.as_dict(), "pretrained": True, "weights": str(weights)}

    def with_ablation(self, setting: str | None) -> EIConfig:
        """This config with one knob changed by an ``ei.ablations`` entry (Tables 4 and 6 vary one at a time)."""
        if not setting:
            return self
        knob, value = parse_ablation(setting)
        return dataclasses.replace(self, **{knob: value})
