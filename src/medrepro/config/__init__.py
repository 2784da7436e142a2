"""The typed configuration: params.yaml (plus an override file) validated once and turned into dataclasses.

Every knob lives in params.yaml; nothing here has a default of its own. ``load_config``
reads the file, merges an override (``--configfile`` runs set ``$MEDREPRO_PARAMS_OVERRIDE``), validates it against
``workflow/schemas/params.schema.yaml`` and then runs the cross-key and range checks the schema cannot express
(``check_params``). Both drivers run the same checks before any stage: the Snakefile on its merged ``config``, and
every stage CLI on startup (so ``dvc repro`` fails at the first stage it would run). Errors name the key.

This package's face re-exports what the rest of the code imports (``from medrepro.config import Config``); the parts:
``shared`` (dataclasses several systems use), ``ei``, ``vap``, ``hica`` (each system's dataclasses), ``ablation``
(EI's ablation settings), ``schema`` (YAML reading, merging, schema validation), ``checks`` (cross-key checks),
``loader`` (``Config`` and ``load_config``) and ``__main__`` (``python -m medrepro.config --merge``). Run and
synthetic-set names (``train_data_of``, ``generator_id`` …) are paths: ``medrepro.layout``.
"""

from medrepro.config.ablation import ABLATION_KNOBS, parse_ablation
from medrepro.config.checks import check_params, cross_key_problems
from medrepro.config.ei import BaselineConfig, EIConfig, VFMPretrainConfig
from medrepro.config.hica import HiCAConfig
from medrepro.config.loader import OVERRIDE_ENV, Config, from_params, load_config, load_params
from medrepro.config.schema import deep_merge, read_yaml, safe_load_yaml, schema_path, validate
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
    VAE_DEFAULT_MODEL,
    VAE_DEFAULT_SCALE,
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

__all__ = [
    "ABLATION_KNOBS", "OVERRIDE_ENV", "VAE_DEFAULT_MODEL", "VAE_DEFAULT_SCALE",
    "AugmentConfig", "BaselineConfig", "CaptionConfig", "Config", "DiffusionConfig", "DiffusionTrainConfig",
    "DownstreamConfig", "EIConfig", "GANConfig", "GenerationMetricsConfig", "GeneratorDataConfig", "HiCAConfig",
    "ModelConfig", "NoiseConfig", "OpenAIConfig", "ReportConfig", "SampleConfig", "SplitsConfig", "SynthesisConfig",
    "SyntheticMixConfig", "TextConfig", "TrainConfig", "TransformersConfig", "UViTSizeConfig", "VAEConfig",
    "VFMPretrainConfig",
    "check_params", "cross_key_problems", "deep_merge", "from_params", "load_config", "load_params", "parse_ablation",
    "read_yaml", "safe_load_yaml", "schema_path", "validate",
]
