"""Multimodal ViT models of the EI paper on one real-ratio subset: EI itself and the Table 3 fusion baselines.

Towers start from the ``vfm`` stage's weights; where the model's PEFT method is the pre-adaptation method
(``ei.adapter``, MoR), each modality's towers are initialised from its unimodal pre-adapted state (EI Sec. 4.1).
The modality prior π of the gating loss comes from the pre-adaptation runs: each modality's best validation mAP
(the paper: "the best unimodal training performance"; we read it as the model-selection score).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from medrepro.data.splits import ratio_column
from medrepro.errors import DataError
from medrepro.io import read_json
from medrepro.models.adapters import count_trainable
from medrepro.models.backbones import normalization
from medrepro.models.ei import EINetwork, build_ei
from medrepro.models.fusion import build_fusion
from medrepro.train.artifacts import finish_run
from medrepro.train.classify import train_classifier
from medrepro.train.devices import prepare_model, resolve_device, seed_everything
from medrepro.train.downstream import load_task
from medrepro.train.ei_probe import intervention_probe
from medrepro.train.loop import fingerprint
from medrepro.train.peft import load_adapter_states
from medrepro.train.vfm import tower_cfg

#: the ``ei`` keys a multimodal training run depends on (dvc.yaml lists the same ones as the stages' params)
EI_KNOBS = ("vfm", "adapter", "int_layer", "insert_layer", "lambda_aa", "lambda_ag", "detach_fusion")

log = logging.getLogger("medrepro")


def modality_prior(preadapt_record: Mapping[str, Any], seed: int, modalities: list[str]) -> list[float]:
    """Per-modality best val mAP of the unimodal pre-adaptation runs of ``seed``."""
    best = {r["modality"]: r["val_mAP"] for r in preadapt_record["runs"] if r["seed"] == seed}
    missing = [m for m in modalities if m not in best]
    if missing:
        raise DataError(f"pre-adaptation metrics lack seed {seed} modality {missing}")
    return [float(best[m]) for m in modalities]


def model_spec(params: Mapping[str, Any], method: str, adapter: str | None = None) -> dict[str, Any]:
    """``ei`` (the EI network with ``adapter``, default ``ei.adapter``) or a baseline from ``ei.baselines``."""
    ei = params["ei"]
    if method == "ei":
        return {"fusion": "ei", "adapter": adapter or ei["adapter"]}
    if method not in ei["baselines"]:
        raise DataError(f"unknown multimodal method {method!r}; ei.baselines has {sorted(ei['baselines'])}")
    return dict(ei["baselines"][method])


def build_model(params: Mapping[str, Any], spec: Mapping[str, Any], tower: Mapping[str, Any],
                modalities: list[str], classes: Mapping[str, Any], states: dict | None,
                prior: list[float] | None) -> nn.Module:
    ei = params["ei"]
    multilabel = classes["task"] == "multilabel"
    k = len(classes["classes"])
    if spec["fusion"] == "ei":
        return build_ei(tower, modalities, k, spec["adapter"], states, multilabel=multilabel,
                        int_layer=ei["int_layer"], insert_layer=ei["insert_layer"], lambda_aa=ei["lambda_aa"],
                        lambda_ag=ei["lambda_ag"], detach_fusion=ei["detach_fusion"], modality_prior=prior)
    return build_fusion(spec["fusion"], tower, modalities, k, spec["adapter"], states, multilabel=multilabel)


def run_multimodal(params: Mapping[str, Any], dataset: str, method: str, ratio: float, models_dir: Path,
                   preadapt_dir: Path, preadapt_metrics: Path, vfm_file: Path, train_data: str = "real",
                   ckpt_dir: Path | None = None, data_root: Path = Path("data"),
                   adapter: str | None = None) -> dict[str, Any]:
    """Train EI or a baseline for every seed; save trainable weights; return a downstream-style record."""
    spec = model_spec(params, method, adapter)
    tower, cfg = tower_cfg(params, vfm_file), params["train"]
    device = resolve_device(params["device"])
    pre = read_json(preadapt_metrics)
    # UniModel's one shared tower fits no single modality's pre-adapted state: it starts from the VFM
    init_from_preadapt = spec["adapter"] == pre["method"] and spec["fusion"] != "unimodel"
    runs = []
    for seed in params["seeds"]:
        data, classes = load_task(dataset, ratio_column(ratio), seed, slices=cfg.get("slices", 4),
                                  data_root=data_root, norm=normalization(tower))
        modalities = list(data.images.modalities)
        states = load_adapter_states(preadapt_dir, seed, modalities) if init_from_preadapt else None
        prior = modality_prior(pre, seed, modalities)
        gen = seed_everything(seed)
        sized = {**tower, "img_size": classes["image_size"]}
        net = build_model(params, spec, sized, modalities, classes, states, prior)
        model = prepare_model(net, device, params["compile"])
        desc = {"dataset": dataset, "method": method, "spec": spec, "ratio": ratio, "seed": seed, "train": cfg,
                "ei": {k: params["ei"][k] for k in EI_KNOBS}, "prior": prior}
        ckpt = ckpt_dir / f"seed{seed}.pt" if ckpt_dir else None
        _, record = train_classifier(model, data, cfg, gen, device, params["precision"], ckpt, fingerprint(desc),
                                     desc=f"{dataset}/{method}/{ratio:g}/seed{seed}")
        if isinstance(net, EINetwork):  # what the early intervention adds to the trained network (test split)
            record["test_probe"] = intervention_probe(net, data, data.test_idx, device, params["precision"])
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in model.state_dict().items() if k in trainable}
        finish_run(models_dir / f"seed{seed}.safetensors", state, desc, ckpt)
        runs.append({"seed": seed, "n_real": len(data.train_idx), "n_synthetic": 0,
                     "trainable_params": count_trainable(model, exclude=()), **record})
        log.info("%s seed %d: test %s", method, seed, {k: round(v, 4) for k, v in record["test"].items()})
    return {"dataset": dataset, "method": method, "train_data": train_data, "real_ratio": ratio,
            "classes": classes["classes"], "spec": spec, "runs": runs}
