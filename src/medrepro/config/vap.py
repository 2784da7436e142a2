"""Dataclasses of VAP-Diffusion: downstream classifiers, the diffusion generator, GAN, synthesis, generation metrics."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from medrepro.config.shared import ModelConfig, TrainConfig
from medrepro.errors import ParamsError


@dataclass(frozen=True)
class SyntheticMixConfig:
    """How synthetic samples join a real subset: ``per_class`` per class; ``real_fraction`` None = union, else real
    samples repeated to that share of every epoch."""

    per_class: int
    real_fraction: float | None


@dataclass(frozen=True)
class DownstreamConfig:
    methods: tuple[str, ...]
    synthetic: SyntheticMixConfig
    fusion: str
    fusion_hidden: int
    models: dict[str, ModelConfig]
    train: TrainConfig


#: the SD VAE of U-ViT's latent models (VAP-Diffusion's generator) and its latent scaling factor
VAE_DEFAULT_MODEL = "stabilityai/sd-vae-ft-ema"
VAE_DEFAULT_SCALE = 0.18215


@dataclass(frozen=True)
class VAEConfig:
    """Which diffusers ``AutoencoderKL`` encodes images for latent diffusion (``medrepro.vap.vae``)."""

    model: str = VAE_DEFAULT_MODEL  # hub id (or a local folder) of a diffusers AutoencoderKL
    weights: str | None = None  # a save_pretrained folder or a single .safetensors/.ckpt file instead of the hub
    scale: float = VAE_DEFAULT_SCALE  # latents = posterior · scale

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ParamsError(f"diffusion.vae.scale must be a positive number, got {self.scale!r}")


@dataclass(frozen=True)
class TextConfig:
    kind: str  # minilm | open_clip
    model: str | None
    weights: str | None
    max_tokens: int
    pool: int = 1  # context tokens = token states averaged in windows of this many (1: every state, as upstream)

    def tower(self) -> dict[str, Any]:
        """The text tower's own settings (``medrepro.models.text.TextTowerConfig``)."""
        return {"kind": self.kind, "model": self.model, "weights": self.weights, "max_tokens": self.max_tokens}

    @property
    def context_len(self) -> int:
        return -(-self.max_tokens // self.pool)


@dataclass(frozen=True)
class UViTSizeConfig:
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float
    qkv_bias: bool
    pcm_tokens: int | None  # prototype tokens per class (None: 2 × patches, as upstream)
    label_token: bool = True  # the vap (PCM) variant keeps a label token (upstream's PCM model: none)


@dataclass(frozen=True)
class NoiseConfig:
    num_train_timesteps: int
    beta_start: float
    beta_end: float
    beta_schedule: str
    prediction: str = "epsilon"  # the denoiser's output: epsilon (Eq. 2, upstream) | v_prediction | sample (x_0)


@dataclass(frozen=True)
class DiffusionTrainConfig:
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    beta1: float
    beta2: float
    warmup_steps: int
    ema_decay: float
    checkpoint_every: int
    class_balanced: bool
    hflip: bool
    snr_gamma: float | None  # Min-SNR-γ loss weights (Hang et al. 2023); None: plain MSE (Eq. 2, upstream)


@dataclass(frozen=True)
class SampleConfig:
    sampler: str  # dpmsolver++ | ddim
    steps: int
    guidance_scale: float  # uncond + s·(cond − uncond)
    batch_size: int
    thresholding: bool = False  # keep the predicted x_0 in [-1, 1] (pixel space only)


@dataclass(frozen=True)
class DiffusionConfig:
    """VAP-Diffusion's generator (Sec. 2.1, 2.4): U-ViT size, conditions, noise schedule, training, sampling."""

    variants: tuple[str, ...]
    train_subset: str
    space: str
    image_size: int
    vae: VAEConfig
    text: TextConfig
    uvit: UViTSizeConfig
    pcm_alpha: float
    p_uncond: float
    noise: NoiseConfig
    train: DiffusionTrainConfig
    sample: SampleConfig

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GANConfig:
    """The StyleGAN2-style baseline (``medrepro.vap.gan``): size profile and schedule."""

    profile: str  # embedded | paper
    steps: int
    batch_size: int
    checkpoint_every: int
    hflip: bool


@dataclass(frozen=True)
class GeneratorDataConfig:
    """vap_generator_data.csv: ``variant`` also trained on each real ``ratios`` subset (what the downstream model
    sees) instead of ``diffusion.train_subset``."""

    variant: str
    ratios: tuple[float, ...]


@dataclass(frozen=True)
class SynthesisConfig:
    generators: tuple[str, ...]  # table3's real+syn_<generator> rows
    ratios: tuple[float, ...]  # the real ratios (of splits.ratios) those rows are trained at
    per_class: int
    bank: str  # train | unseen
    grid_per_class: int
    generator_data: GeneratorDataConfig


@dataclass(frozen=True)
class GenerationMetricsConfig:
    """VAP-Diffusion Tables 1-2: which features the generation metrics use and how many images they compare."""

    extractor: str  # classifier | inception
    classifier: str  # a downstream.methods key (its real ratio_1.0 run)
    inception_weights: str
    per_class: int
    k: int
    n_boot: int
    generators: tuple[str, ...]  # evaluated: diffusion variants and/or gan
