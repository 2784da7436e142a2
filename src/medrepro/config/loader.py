"""The typed ``Config`` every stage uses, built from params.yaml (plus an override) once the params pass the checks."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrepro.config.checks import check_params
from medrepro.config.ei import BaselineConfig, EIConfig, VFMPretrainConfig
from medrepro.config.hica import HiCAConfig
from medrepro.config.schema import deep_merge, read_yaml
from medrepro.config.shared import (
    AugmentConfig,
    CaptionConfig,
    ModelConfig,
    OpenAIConfig,
    ReportConfig,
    SplitsConfig,
    TrainConfig,
    TransformersConfig,
)
from medrepro.config.vap import (
    DiffusionConfig,
    DiffusionTrainConfig,
    DownstreamConfig,
    GANConfig,
    GenerationMetricsConfig,
    GeneratorDataConfig,
    NoiseConfig,
    SampleConfig,
    SynthesisConfig,
    SyntheticMixConfig,
    TextConfig,
    UViTSizeConfig,
    VAEConfig,
)
from medrepro.errors import ParamsError

#: environment variable naming an override YAML merged on top of params.yaml (set by the Snakefile for
#: ``--configfile config/paper.yaml`` runs, so that stage commands see the same values as the rules).
OVERRIDE_ENV = "MEDREPRO_PARAMS_OVERRIDE"


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
