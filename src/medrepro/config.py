"""The typed configuration: params.yaml (plus an override file) validated once and turned into dataclasses.

Every knob lives in params.yaml (DESIGN.md, Principles); nothing here has a default of its own. ``load_config``
reads the file, merges an override (``--configfile`` runs set ``$MEDREPRO_PARAMS_OVERRIDE``), validates it against
``workflow/schemas/params.schema.yaml`` and then runs the cross-key and range checks the schema cannot express
(``check_params``). Both drivers run the same checks before any stage: the Snakefile on its merged ``config``, and
every stage CLI on startup (so ``dvc repro`` fails at the first stage it would run). Errors name the key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from medrepro.errors import ParamsError
from medrepro.layout import FULL

#: environment variable naming an override YAML merged on top of params.yaml (set by the Snakefile for
#: ``--configfile config/paper.yaml`` runs, so that stage commands see the same values as the rules).
OVERRIDE_ENV = "MEDREPRO_PARAMS_OVERRIDE"

#: a run's ``train_data``: ``real`` or ``real+syn_<generator>`` (a diffusion variant of ``synthesis.generators``)
REAL = "real"
SYN_PREFIX = "real+syn_"
#: generators that are not diffusion variants: the GAN baseline and the class-mean baseline (their own stages)
BASELINE_GENERATORS = ("gan", "class_mean")


def train_data_of(generator: str | None) -> str:
    """``real`` (None) or ``real+syn_<generator>``."""
    return REAL if generator is None else f"{SYN_PREFIX}{generator}"


def generator_id(name: str, subset: str | None = None) -> str:
    """A synthetic set's name: ``vap`` (the generator trained on ``diffusion.train_subset``) or ``vap-ratio_0.01``
    (trained on that real subset, for ``vap_generator_data``)."""
    return name if subset is None else f"{name}-{subset}"


def parse_generator_id(gen_id: str) -> tuple[str, str | None]:
    """(generator name, real subset it trained on or None for ``diffusion.train_subset``) of a synthetic set name."""
    name, _, subset = gen_id.partition("-")
    return name, subset or None


def synthetic_generator(train_data: str) -> str | None:
    """The generator whose images ``train_data`` adds to the real subset (``real+syn_vap`` → ``vap``); None: real."""
    return train_data.removeprefix(SYN_PREFIX) if train_data.startswith(SYN_PREFIX) else None


# ----------------------------------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (``medrepro.train.augment``): the embedded stand-in (flip, shift, additive
    brightness/contrast) and the EI authors' pipeline (rotation, random resized crop, colour jitter; UPSTREAM.md)."""

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


#: the SD VAE of U-ViT's latent models (VAP-Diffusion's generator) and its latent scaling factor
VAE_DEFAULT_MODEL = "stabilityai/sd-vae-ft-ema"
VAE_DEFAULT_SCALE = 0.18215


@dataclass(frozen=True)
class VAEConfig:
    """Which diffusers ``AutoencoderKL`` encodes images for latent diffusion (``medrepro.diffusion.vae``)."""

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
        """The text tower's own settings (``medrepro.diffusion.text.TextTowerConfig``)."""
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
    """The StyleGAN2-style baseline (``medrepro.train.gan``): size profile and schedule."""

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


@dataclass(frozen=True)
class HiCAConfig:
    """HiCA (stage train_hica): subsets, the shared space, the frozen text encoder, Eq. 2-5, ROIs, protocol."""

    datasets: tuple[str, ...]
    subsets: tuple[str, ...]
    embed_dim: int
    text: dict[str, Any]  # medrepro.diffusion.text.TextTowerConfig
    clip: dict[str, Any]  # model, weights: both towers from one open_clip model (model null: ei.vfm + text)
    loss: dict[str, Any]  # medrepro.models.hica.HiCALossConfig
    rois: dict[str, Any]  # medrepro.hica.rois.RoiConfig
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


@dataclass(frozen=True)
class ReportConfig:
    headline_metric: str
    n_boot: int  # test-sample resamples of the paired intervals of the result tables


@dataclass(frozen=True)
class Config:
    """Everything a stage needs, built once from the validated params (``load_config``)."""

    seed: int
    seeds: tuple[int, ...]
    device: str
    precision: str
    compile: bool
    workers: int
    threads: int
    datasets: tuple[str, ...]
    data: dict[str, dict[str, Any]]
    splits: SplitsConfig
    train: TrainConfig
    ei: EIConfig
    downstream: DownstreamConfig
    captions: CaptionConfig
    diffusion: DiffusionConfig
    gan: GANConfig
    synthesis: SynthesisConfig
    generation_metrics: GenerationMetricsConfig
    hica: HiCAConfig
    report: ReportConfig
    source: str = field(default="params.yaml", compare=False)

    def dataset_options(self, dataset: str) -> dict[str, Any]:
        """``data.<dataset>``: the options of one dataset adapter."""
        if dataset not in self.data:
            raise ParamsError(f"{self.source}: data.{dataset} is missing")
        return copy.deepcopy(self.data[dataset])

    def with_ablation(self, setting: str | None) -> Config:
        return dataclasses.replace(self, ei=self.ei.with_ablation(setting)) if setting else self


# --------------------------------------------------------------------------------------------------- building
def _train(d: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig(**{**d, "augment": AugmentConfig(**d["augment"])})


def _model(d: Mapping[str, Any]) -> ModelConfig:
    return ModelConfig(arch=d["arch"], kwargs=dict(d["kwargs"]), pretrained=d["pretrained"], weights=d["weights"],
                       normalize=d.get("normalize"))


def _captions(d: Mapping[str, Any]) -> CaptionConfig:
    return CaptionConfig(**{**d, "splits": tuple(d["splits"]), "openai": OpenAIConfig(**d["openai"]),
                            "transformers": TransformersConfig(**d["transformers"])})


def _diffusion(d: Mapping[str, Any]) -> DiffusionConfig:
    return DiffusionConfig(
        variants=tuple(d["variants"]), train_subset=d["train_subset"],
        space=d["space"], image_size=d["image_size"], vae=VAEConfig(**d["vae"]), text=TextConfig(**d["text"]),
        uvit=UViTSizeConfig(**d["uvit"]), pcm_alpha=d["pcm_alpha"], p_uncond=d["p_uncond"],
        noise=NoiseConfig(**d["noise"]), train=DiffusionTrainConfig(**d["train"]), sample=SampleConfig(**d["sample"]))


def from_params(params: Mapping[str, Any], source: str = "params.yaml") -> Config:
    """The typed config of already validated params (see ``load_config``)."""
    ei, ds = params["ei"], params["downstream"]
    return Config(
        seed=params["seed"], seeds=tuple(params["seeds"]), device=params["device"], precision=params["precision"],
        compile=params["compile"], workers=params["workers"], threads=params["threads"],
        datasets=tuple(params["datasets"]), data=copy.deepcopy(dict(params["data"])),
        splits=SplitsConfig(ratios=tuple(params["splits"]["ratios"]), shots=tuple(params["splits"]["shots"])),
        train=_train(params["train"]),
        ei=EIConfig(
            datasets=tuple(ei["datasets"]), vfm=_model(ei["vfm"]), vfm_source=ei["vfm_source"],
            vfm_pretrain=VFMPretrainConfig(**ei["vfm_pretrain"]), adapter=ei["adapter"],
            int_layer=ei["int_layer"], insert_layer=ei["insert_layer"], lambda_aa=ei["lambda_aa"],
            lambda_ag=ei["lambda_ag"], detach_fusion=ei["detach_fusion"], slice_pool=ei["slice_pool"],
            int_scale=ei["int_scale"], intervention=ei["intervention"],
            ablations=tuple(ei["ablations"]),
            baselines={k: BaselineConfig(**v) for k, v in ei["baselines"].items()},
            table3_methods=tuple(ei["table3_methods"]), table7_methods=tuple(ei["table7_methods"]),
            table8_methods=tuple(ei["table8_methods"])),
        downstream=DownstreamConfig(
            methods=tuple(ds["methods"]), synthetic=SyntheticMixConfig(**ds["synthetic"]), fusion=ds["fusion"],
            fusion_hidden=ds["fusion_hidden"], models={k: _model(v) for k, v in ds["models"].items()},
            train=_train(ds["train"])),
        captions=_captions(params["captions"]),
        diffusion=_diffusion(params["diffusion"]),
        gan=GANConfig(**params["gan"]),
        synthesis=SynthesisConfig(**{
            **params["synthesis"], "generators": tuple(params["synthesis"]["generators"]),
            "ratios": tuple(params["synthesis"]["ratios"]),
            "generator_data": GeneratorDataConfig(params["synthesis"]["generator_data"]["variant"],
                                                  tuple(params["synthesis"]["generator_data"]["ratios"]))}),
        generation_metrics=GenerationMetricsConfig(**{**params["generation_metrics"],
                                                      "generators": tuple(params["generation_metrics"]["generators"])}),
        hica=HiCAConfig(**{**params["hica"], "datasets": tuple(params["hica"]["datasets"]),
                           "subsets": tuple(params["hica"]["subsets"]), "text": dict(params["hica"]["text"]),
                           "clip": dict(params["hica"]["clip"]),
                           "loss": dict(params["hica"]["loss"]), "rois": dict(params["hica"]["rois"]),
                           "pretrain": dict(params["hica"]["pretrain"]),
                           "zeroshot": dict(params["hica"]["zeroshot"]),
                           "baselines": dict(params["hica"]["baselines"]),
                           "ablations": tuple(params["hica"]["ablations"]),
                           "ablation_subsets": tuple(params["hica"]["ablation_subsets"]),
                           "unseen": {"datasets": tuple(params["hica"]["unseen"]["datasets"]),
                                      "classes": tuple(params["hica"]["unseen"]["classes"]),
                                      "subset": params["hica"]["unseen"]["subset"]},
                           "noise": {**params["hica"]["noise"], "kinds": tuple(params["hica"]["noise"]["kinds"])},
                           "explain": dict(params["hica"]["explain"]),
                           "train": _train(params["hica"]["train"])}),
        report=ReportConfig(**params["report"]),
        source=source,
    )


def load_config(path: str | os.PathLike = "params.yaml", override: str | os.PathLike | None = None) -> Config:
    """Read params.yaml, merge an override (argument or ``$MEDREPRO_PARAMS_OVERRIDE``), check, build."""
    params, source = load_params(path, override)
    return from_params(params, source)


def load_params(path: str | os.PathLike = "params.yaml",
                override: str | os.PathLike | None = None) -> tuple[dict[str, Any], str]:
    """The merged, fully checked params as a plain mapping (what DVC and Snakemake see) and where they came from."""
    params = read_yaml(Path(path))
    override = override or os.environ.get(OVERRIDE_ENV)
    source = str(path)
    if override:
        params = deep_merge(params, read_yaml(Path(override)))
        source = f"{path} + {override}"
    check_params(params, source)
    return params, source


# ---------------------------------------------------------------------------------------------------- checking
def schema_path() -> Path:
    """workflow/schemas/params.schema.yaml of the project (found from the working directory or the package)."""
    for root in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = root / "workflow" / "schemas" / "params.schema.yaml"
        if candidate.is_file():
            return candidate
    raise ParamsError("workflow/schemas/params.schema.yaml not found (run from the project root)")


@cache
def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml's C loader when PyYAML has it (10× faster on params.yaml and the schema)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _schema() -> dict[str, Any]:
    return safe_load_yaml(schema_path().read_text())


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = safe_load_yaml(path.read_text())
    except FileNotFoundError as exc:
        raise ParamsError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def validate(params: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Validate against the JSON schema; the error names the offending key path (e.g. ``train.lr_max``)."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return
    err = errors[0]
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        name = ".".join([*map(str, err.absolute_path), extra[0]]) if extra else key
        raise ParamsError(f"{source}: unknown key {name!r}")
    if err.validator == "required":
        raise ParamsError(f"{source}: {key!r}: {err.message}")
    raise ParamsError(f"{source}: invalid value for {key!r}: {err.message}")


def check_params(params: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Schema validation, then every cross-key and range check; the first problem raises, naming the key."""
    validate(params, source)
    problems = list(cross_key_problems(params))
    if problems:
        raise ParamsError(f"{source}: " + "; ".join(problems))


def _duplicates(key: str, values: Iterable[Any]) -> list[str]:
    return [f"{key} lists {v!r} {n} times" for v, n in Counter(map(str, values)).items() if n > 1]


def _listed_keys(key: str, values: Iterable[str], mapping_key: str, mapping: Mapping[str, Any]) -> list[str]:
    return [f"{key} lists {v!r}, which is not a key of {mapping_key} (it has: {', '.join(sorted(mapping))})"
            for v in values if v not in mapping]


def cross_key_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """What the schema cannot express: lists that name other keys, layer ranges, lr order, repeated entries."""
    ei, ds = params["ei"], params["downstream"]
    lists = {"seeds": params["seeds"], "datasets": params["datasets"], "splits.ratios": params["splits"]["ratios"],
             "splits.shots": params["splits"]["shots"], "ei.datasets": ei["datasets"], "ei.ablations": ei["ablations"],
             "ei.table3_methods": ei["table3_methods"], "ei.table7_methods": ei["table7_methods"],
             "ei.table8_methods": ei["table8_methods"], "downstream.methods": ds["methods"]}
    for key, values in lists.items():
        yield from _duplicates(key, values)
    yield from _listed_keys("datasets", params["datasets"], "data", params["data"])
    yield from (f"ei.datasets lists {d!r}, which datasets does not" for d in ei["datasets"]
                if d not in params["datasets"])
    yield from _listed_keys("downstream.methods", ds["methods"], "downstream.models", ds["models"])
    yield from _listed_keys("ei.table3_methods", ei["table3_methods"], "ei.baselines", ei["baselines"])
    yield from _diffusion_problems(params)
    yield from _hica_problems(params)
    for key, train in (("train", params["train"]), ("downstream.train", ds["train"]),
                       ("hica.train", params["hica"]["train"])):
        if train["lr_min"] > train["lr_max"]:
            yield f"{key}.lr_min ({train['lr_min']}) is above {key}.lr_max ({train['lr_max']})"
    if ei["datasets"] and FULL not in params["splits"]["ratios"]:
        yield (f"splits.ratios lacks {FULL}: EI's baselines and Tables 4, 6, 7, 8 start from the "
               "pre-adaptation on the whole train split")
    if ei["vfm_source"] == "given" and not ei["vfm"]["pretrained"]:
        yield "ei.vfm_source: given needs ei.vfm.pretrained: true (a randomly initialised VFM is not a given one)"
    yield from _caption_problems(params)
    if ei["vfm_source"] == "synthetic" and "synth_mm" not in params["data"]:
        yield "ei.vfm_source: synthetic pretrains on synth_mm renderings, but data.synth_mm is missing"
    yield from _layer_problems(ei)


def _caption_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """The prompt bank needs captions of the train split and of the unseen split, and a subset splits makes."""
    cap = params["captions"]
    yield from _duplicates("captions.splits", cap["splits"])
    if "train" not in cap["splits"]:
        yield "captions.splits must include train (the prompt bank holds training captions, VAP Sec. 2.3)"
    if cap["unseen_split"] not in cap["splits"]:
        yield f"captions.unseen_split {cap['unseen_split']!r} is not in captions.splits {cap['splits']}"
    from medrepro.data.splits import ratio_column, shot_column  # the column names the split stage writes

    subsets = ([ratio_column(r) for r in params["splits"]["ratios"]]
               + [shot_column(k) for k in params["splits"]["shots"]])
    if cap["bank_subset"] not in subsets:
        yield f"captions.bank_subset {cap['bank_subset']!r} is not a subset splits makes ({', '.join(subsets)})"


def _hica_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """HiCA's datasets must be run; its subsets must be columns the split stage writes."""
    from medrepro.data.splits import ratio_column, shot_column

    hica = params["hica"]
    yield from _duplicates("hica.datasets", hica["datasets"])
    yield from _duplicates("hica.subsets", hica["subsets"])
    yield from _duplicates("hica.ablations", hica["ablations"])
    yield from _duplicates("hica.noise.kinds", hica["noise"]["kinds"])
    yield from (f"hica.datasets lists {d!r}, which datasets does not" for d in hica["datasets"]
                if d not in params["datasets"])
    yield from (f"hica.unseen.datasets lists {d!r}, which hica.datasets does not" for d in hica["unseen"]["datasets"]
                if d not in hica["datasets"])
    made = ([ratio_column(r) for r in params["splits"]["ratios"]] + [shot_column(k) for k in params["splits"]["shots"]])
    yield from (f"hica.subsets lists {s!r}, which splits does not make ({', '.join(made)})" for s in hica["subsets"]
                if s not in made)
    yield from (f"hica.subsets lists {s!r}: the real-ratio subsets of splits.ratios are trained for table3 already "
                "(stage train_hica_ratio)" for s in hica["subsets"]
                if s in {ratio_column(r) for r in params["splits"]["ratios"]})
    yield from (f"hica.ablation_subsets lists {s!r}, which hica.subsets does not" for s in hica["ablation_subsets"]
                if s not in hica["subsets"])
    for key in ("unseen", "noise", "explain"):
        if hica[key]["subset"] not in hica["subsets"]:
            yield f"hica.{key}.subset {hica[key]['subset']!r} is not in hica.subsets"
    for key in ("cnn", "transfer"):
        if hica["baselines"][key] not in params["downstream"]["models"]:
            yield f"hica.baselines.{key} {hica['baselines'][key]!r} is not a key of downstream.models"
    transfer = params["downstream"]["models"].get(hica["baselines"]["transfer"], {})
    if hica["baselines"]["transfer_source"] == "given" and not transfer.get("pretrained"):
        yield "hica.baselines.transfer_source: given needs its downstream.models block to be pretrained: true"
    if hica["datasets"] and FULL not in params["splits"]["ratios"]:
        yield f"splits.ratios lacks {FULL}: HiCA's stage 1 and zero-shot baseline use the whole train split"
    if hica["rois"]["mode"] == "grid" and round(hica["rois"]["k"] ** 0.5) ** 2 != hica["rois"]["k"]:
        yield f"hica.rois.k {hica['rois']['k']} must be a square number for mode grid"
    if hica["roi_source"] == "full":  # the ROI copy must add pixels and map boxes by one whole scale
        for d in hica["datasets"]:
            size = (params["data"].get(d) or {}).get("image_size")
            if size and (hica["roi_image_size"] % size or hica["roi_image_size"] <= size):
                yield (f"hica.roi_image_size {hica['roi_image_size']} must be a whole multiple (above 1) of "
                       f"data.{d}.image_size {size} with hica.roi_source full")


def _diffusion_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """Synthesis needs its generators; U-ViT sizes must tile the image; subsets must exist."""
    diff, ds = params["diffusion"], params["downstream"]
    yield from _duplicates("diffusion.variants", diff["variants"])
    yield from _duplicates("synthesis.generators", params["synthesis"]["generators"])
    yield from (f"synthesis.generators lists {g!r}, which diffusion.variants (the generators trained) does not"
                for g in params["synthesis"]["generators"] if g not in (*diff["variants"], *BASELINE_GENERATORS))
    gm = params["generation_metrics"]
    if gm["extractor"] == "classifier" and gm["classifier"] not in ds["methods"]:
        yield (f"generation_metrics.classifier {gm['classifier']!r} is not in downstream.methods "
               f"({', '.join(ds['methods'])}): its real-data run gives the features")
    if ds["synthetic"]["per_class"] > params["synthesis"]["per_class"]:
        yield (f"downstream.synthetic.per_class ({ds['synthetic']['per_class']}) is above synthesis.per_class "
               f"({params['synthesis']['per_class']}), the number synthesised")
    from medrepro.data.splits import ratio_column

    ratios = [ratio_column(r) for r in params["splits"]["ratios"]]
    if diff["train_subset"] not in ratios:
        yield f"diffusion.train_subset {diff['train_subset']!r} is not a subset splits makes ({', '.join(ratios)})"
    syn_ratios = params["synthesis"]["ratios"]
    yield from _duplicates("synthesis.ratios", syn_ratios)
    yield from (f"synthesis.ratios lists {r}, which splits.ratios does not" for r in syn_ratios
                if r not in params["splits"]["ratios"])
    gd = params["synthesis"]["generator_data"]
    if gd["ratios"] and gd["variant"] not in params["synthesis"]["generators"]:
        yield (f"synthesis.generator_data.variant {gd['variant']!r} is not in synthesis.generators: its table3 "
               "rows are the comparison's generator trained on diffusion.train_subset")
    for r in gd["ratios"]:
        if r not in syn_ratios:
            yield (f"synthesis.generator_data.ratios lists {r}, which synthesis.ratios does not (its table3 rows "
                   "are the other half of the comparison)")
        elif ratio_column(r) == diff["train_subset"]:
            yield (f"synthesis.generator_data.ratios lists {r}: diffusion.train_subset already trains on it "
                   "(the table compares generators trained on more real data with those trained on the subset)")
    yield from _duplicates("generation_metrics.generators", gm["generators"])
    yield from (f"generation_metrics.generators lists {g!r}, which diffusion.variants (the generators trained) "
                "does not" for g in gm["generators"] if g not in (*diff["variants"], *BASELINE_GENERATORS))
    size = diff["image_size"] // (8 if diff["space"] == "latent" else 1)  # SD VAE: 8× downsampling
    uvit = diff["uvit"]
    if size % uvit["patch_size"]:
        yield (f"diffusion.uvit.patch_size {uvit['patch_size']} does not tile the {diff['space']} image of "
               f"{size} px (diffusion.image_size {diff['image_size']})")
    if uvit["dim"] % uvit["heads"]:
        yield f"diffusion.uvit.dim {uvit['dim']} is not a multiple of diffusion.uvit.heads {uvit['heads']}"


def _layer_problems(ei: Mapping[str, Any]) -> Iterable[str]:
    """[INT] layers (EI Eq. 1–2) inside the tower: int_layer in 1..depth, insert_layer in 0..depth-1."""
    ablations = []
    for setting in ei["ablations"]:
        try:
            ablations.append((f"ei.ablations entry {setting!r}", *parse_ablation(setting)))
        except ParamsError as exc:
            yield str(exc)
    depth = ei["vfm"]["kwargs"].get("depth")
    if not isinstance(depth, int):
        return  # the arch's own depth: checked when the tower is built
    settings = [("ei.int_layer", "int_layer", ei["int_layer"]), ("ei.insert_layer", "insert_layer",
                                                                  ei["insert_layer"]), *ablations]
    for where, knob, value in settings:
        if knob == "int_layer" and value is not None and not 1 <= value <= depth:
            yield f"{where}: int_layer {value} is outside 1..{depth} (ei.vfm.kwargs.depth is {depth})"
        if knob == "insert_layer" and not 0 <= value < depth:
            yield f"{where}: insert_layer {value} is outside 0..{depth - 1} (ei.vfm.kwargs.depth is {depth})"


def _bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError(value)
    return value == "true"


#: EI Tables 4 and 6 (and the ``intervention`` mutation): the knob an ``ei.ablations`` entry changes, its value type
ABLATION_KNOBS: dict[str, Callable[[str], Any]] = {"int_layer": int, "insert_layer": int, "lambda_aa": float,
                                                   "lambda_ag": float, "intervention": _bool}


def parse_ablation(setting: str) -> tuple[str, int | float | bool]:
    """``"int_layer-2"`` → ``("int_layer", 2)``: one EI knob of Table 4 (layers) or Table 6 (λ1, λ2) and its value;
    ``"intervention-false"`` → ``("intervention", False)`` (EI without [INT])."""
    knob, sep, value = setting.rpartition("-")
    if not sep or knob not in ABLATION_KNOBS:
        raise ParamsError(f"ablation setting {setting!r}: expected <knob>-<value> with knob in "
                          f"{sorted(ABLATION_KNOBS)}")
    try:
        return knob, ABLATION_KNOBS[knob](value)
    except ValueError as exc:
        raise ParamsError(f"ablation setting {setting!r}: bad value {value!r} for {knob}") from exc


def main(argv: list[str] | None = None) -> None:
    """``python -m medrepro.config [--merge OVERRIDE]``: check and print the merged params as YAML."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m medrepro.config")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--merge", default=None, help="override file, e.g. config/paper.yaml")
    args = parser.parse_args(argv)
    try:
        merged, _ = load_params(args.params, args.merge)
    except ParamsError as exc:
        sys.exit(f"error: {exc}")
    sys.stdout.write(yaml.safe_dump(merged, sort_keys=False))


if __name__ == "__main__":
    main()
