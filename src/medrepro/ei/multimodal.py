"""Multimodal ViT models of the EI paper on one real-ratio subset: EI itself and the Table 3 fusion baselines.

Towers start from the ``vfm`` stage's weights; where the model's PEFT method is the pre-adaptation method
(``ei.adapter``, MoR), each modality's towers are initialised from its unimodal pre-adapted state (EI Sec. 4.1).
The modality prior π of the gating loss comes from the pre-adaptation runs: each modality's best validation mAP
(the paper: "the best unimodal training performance"; we read it as the model-selection score), read from the
description saved beside each pre-adapted state.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from medrepro import layout
from medrepro.config import Config
from medrepro.data.splits import ratio_column
from medrepro.ei.peft import unimodal_selection, unimodal_states
from medrepro.ei.probe import intervention_probe
from medrepro.errors import ParamsError
from medrepro.layout import RunPaths
from medrepro.models.backbones import normalization
from medrepro.models.ei import build_ei
from medrepro.models.fusion import build_fusion
from medrepro.train.runner import RunEnv, SeedRun, run_description, run_stage, stage_header
from medrepro.train.saved import load_saved
from medrepro.train.task import load_training_task


def model_spec(cfg: Config, method: str, adapter: str | None = None) -> dict[str, str]:
    """``ei`` (the EI network with ``adapter``, default ``ei.adapter``) or a baseline from ``ei.baselines``."""
    if method == "ei":
        return {"fusion": "ei", "adapter": adapter or cfg.ei.adapter}
    if method not in cfg.ei.baselines:
        raise ParamsError(f"unknown multimodal method {method!r}; ei.baselines has {sorted(cfg.ei.baselines)}")
    base = cfg.ei.baselines[method]
    return {"fusion": base.fusion, "adapter": base.adapter}


def build_model(spec: Mapping[str, str], tower: Mapping[str, Any], modalities: list[str], num_classes: int,
                multilabel: bool, knobs: Mapping[str, Any], states: dict | None,
                prior: list[float] | None) -> nn.Module:
    """EI (Eq. 1–8, with the ``ei`` knobs) or a fusion baseline over ``modalities``."""
    if spec["fusion"] == "ei":
        return build_ei(tower, modalities, num_classes, spec["adapter"], states, multilabel=multilabel,
                        int_layer=knobs["int_layer"], insert_layer=knobs["insert_layer"],
                        lambda_aa=knobs["lambda_aa"], lambda_ag=knobs["lambda_ag"],
                        detach_fusion=knobs["detach_fusion"], modality_prior=prior,
                        aux_slice_pool=knobs["slice_pool"], int_scale=knobs.get("int_scale", "none"),
                        use_int=knobs.get("intervention", True))
    return build_fusion(spec["fusion"], tower, modalities, num_classes, spec["adapter"], states,
                        multilabel=multilabel, slice_pool=knobs["slice_pool"])


def rebuild_multimodal(desc: Mapping[str, Any], states: dict | None = None) -> nn.Module:
    """The model a multimodal run's description names (towers from the VFM file; trained weights load on top)."""
    return build_model(desc["spec"], desc["tower"], list(desc["modalities"]), desc["num_classes"],
                       desc["multilabel"], desc["ei"], states, desc["prior"])


def load_multimodal(weights: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A saved EI or fusion run (its trainable state on the frozen towers the description names)."""
    return load_saved(weights, "multimodal", rebuild_multimodal, strict=False)


def _trainable_state(net: nn.Module, model: nn.Module) -> dict:
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    return {k: v for k, v in net.state_dict().items() if k in trainable}


def _probe(data: Any, env: RunEnv, net: nn.Module) -> dict[str, Any]:
    """What the early intervention adds to the trained network (test split)."""
    return intervention_probe(net, data, data.test_idx, env.device, env.precision)


def multimodal_run(cfg: Config, dataset: str, method: str, ratio: float, paths: RunPaths, init: RunPaths,
                   adapter: str | None, vfm_file: Path, env: RunEnv, train_data: str, seed: int) -> SeedRun:
    """One seed of EI or a baseline; towers start from the unimodal runs of ``init`` where the PEFT method fits;
    ``train_data`` ``real+syn_<generator>`` adds that generator's paired synthetic samples (downstream.synthetic)."""
    spec = model_spec(cfg, method, adapter)
    tower = cfg.ei.tower(vfm_file)
    data, classes = load_training_task(dataset, train_data, ratio_column(ratio), seed, None, cfg.train.slices,
                                       cfg.downstream.synthetic, norm=normalization(tower))
    modalities = list(data.images.modalities)
    selection = unimodal_selection(init, seed, modalities)
    # UniModel's one shared tower fits no single modality's pre-adapted state: it starts from the VFM
    init_from_unimodal = spec["adapter"] == selection["method"] and spec["fusion"] != "unimodel"
    states = unimodal_states(init, seed, modalities) if init_from_unimodal else None
    prior = selection["val_mAP"]
    desc = {**run_description("multimodal", dataset, method, ratio, seed, classes, cfg.train), "spec": spec,
            "tower": {**tower, "img_size": classes["image_size"]}, "modalities": modalities,
            "multilabel": classes["task"] == "multilabel", "ei": cfg.ei.knobs(), "prior": prior,
            "train_data": train_data}
    return SeedRun(label=f"{dataset}/{method}/{train_data}/{ratio:g}/seed{seed}", seed=seed, data=data,
                   classes=classes["classes"], train=cfg.train, build=partial(rebuild_multimodal, desc, states),
                   description=desc, weights=paths.weights(seed), checkpoint=paths.checkpoint(seed),
                   saved_state=_trainable_state, probe=partial(_probe, data, env) if spec["fusion"] == "ei" else None)


def run_multimodal(cfg: Config, dataset: str, method: str, ratio: float, adapter: str | None = None,
                   ablation: str | None = None, vfm_file: Path = layout.VFM_WEIGHTS,
                   train_data: str = "real") -> dict[str, Any]:
    """Train EI (``ablation``: one knob changed; ``adapter``: another PEFT inside; ``train_data``: real or real +
    synthetic) or a baseline for every seed."""
    cfg = cfg.with_ablation(ablation)
    paths, init = layout.multimodal(dataset, method, ratio, cfg.ei.adapter, adapter, ablation, train_data)
    header = stage_header(dataset, method=method, train_data=train_data, real_ratio=ratio,
                          spec=model_spec(cfg, method, adapter), ablation=ablation)
    env = RunEnv.from_config(cfg)
    return run_stage(paths, header, partial(multimodal_run, cfg, dataset, method, ratio, paths, init, adapter,
                                            vfm_file, env, train_data), cfg.seeds, env)
