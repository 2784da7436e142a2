"""Dataclasses of the params blocks several systems share: training protocol, timm models, splits, captions, report."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (``medrepro.train.augment``): the embedded stand-in (flip, shift, additive
    brightness/contrast) and the EI authors' pipeline (rotation, random resized crop, colour jitter: their code)."""

    hflip: bool
    crop_pad: int
    color_jitter: float
    rotate: float = 0.0  # authors: rotation by U[-rotate, rotate] degrees (180)
    crop_p: float = 0.0  # authors: with this probability (0.5) a random crop …
    crop_max: float = 0.1  # … of up to this fraction per side, resized back
    jitter: float = 0.0  # authors: contrast, brightness, saturation × U(1 - jitter, 1 + jitter) (0.3), always


@dataclass(frozen=True)
class TrainConfig:
    """A supervised training protocol (``train`` for the EI paper's models, ``downstream.train``)."""

    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str
    lr_min: float
    lr_max: float
    warmup_epochs: int
    cycle_decay: float
    cycle_momentum: bool
    batch_size: int
    max_epochs: int
    patience: int
    min_steps_per_epoch: int
    slices: int
    augment: AugmentConfig

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """A timm model block: ``ei.vfm`` (with ``normalize``) or an entry of ``downstream.models``."""

    arch: str
    kwargs: dict[str, Any]
    pretrained: bool
    weights: str | None
    normalize: str | None = None  # image towers only: clip | timm (absent from downstream model blocks)

    def as_dict(self) -> dict[str, Any]:
        """The mapping the model builders take (keys that are not set are left out)."""
        out = {"arch": self.arch, "kwargs": copy.deepcopy(self.kwargs), "pretrained": self.pretrained,
               "weights": self.weights}
        if self.normalize is not None:
            out["normalize"] = self.normalize
        return out

    @property
    def depth(self) -> int | None:
        """Transformer depth when ``kwargs`` states it (the layer checks of ``ei`` need it)."""
        depth = self.kwargs.get("depth")
        return depth if isinstance(depth, int) else None


@dataclass(frozen=True)
class SplitsConfig:
    ratios: tuple[float, ...]
    shots: tuple[int, ...]


@dataclass(frozen=True)
class OpenAIConfig:
    """An OpenAI-compatible chat-completions server (the key is read from the environment variable ``api_key_env``)."""

    base_url: str
    model: str
    api_key_env: str
    timeout_s: float
    retries: int
    backoff_s: float
    concurrency: int
    temperature: float


@dataclass(frozen=True)
class TransformersConfig:
    """A vision-language model through transformers' image-text-to-text API (hub id or local folder)."""

    model: str
    dtype: str
    batch_size: int


@dataclass(frozen=True)
class CaptionConfig:
    """VAPS captioning and the prompt bank (VAP-Diffusion Sec. 2.2–2.3)."""

    backend: str
    splits: tuple[str, ...]
    bank_subset: str
    unseen_split: str
    batch_size: int
    max_new_tokens: int
    openai: OpenAIConfig
    transformers: TransformersConfig


@dataclass(frozen=True)
class ReportConfig:
    headline_metric: str
    n_boot: int  # test-sample resamples of the paired intervals of the result tables
