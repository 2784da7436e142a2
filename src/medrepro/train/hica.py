"""Stage train_hica's library: HiCA stage 2 (hierarchical contrastive alignment, Sec. III-C) on one labelled subset
(``shot_K`` or ``ratio_r``) per seed, through the shared training runner (``HiCAModel.training_loss`` = Eq. 2).

The image towers and the text encoder start from stage 1 (``hica_pretrain``; with ``hica.pretrain.enabled: false``
from the ``vfm`` stage's towers and the encoder as shipped); the text side is then frozen and its sentence
embeddings are computed once per run. Best epoch by validation mAP, as every
classifier here; test scores are the class-descriptor similarities (softmax over the classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from medrepro import layout
from medrepro.config import Config
from medrepro.diffusion.text import TextTowerConfig, build_text_tower
from medrepro.errors import DataError, WeightsError
from medrepro.hica.data import attach_captions
from medrepro.hica.rois import RoiConfig
from medrepro.layout import RunPaths
from medrepro.models.backbones import build_vit, normalization
from medrepro.models.hica import HiCALossConfig, HiCAModel, class_text_embedding
from medrepro.train.hica_pretrain import text_folder
from medrepro.train.runner import RunEnv, SeedRun, run_description, run_stage, stage_header
from medrepro.train.task import load_task

METHOD = "hica"


def build_hica(desc: Mapping[str, Any], class_text: torch.Tensor, pretrained: bool = True) -> HiCAModel:
    """The HiCA model a run's description names, with ``class_text`` (C, text_dim) as its class descriptors."""
    tower = {**desc["tower"], "img_size": desc["image_size"], "num_classes": desc["num_classes"],
             # ROI crops (hica.roi_size) are smaller than the image: position embeddings resampled per input size
             "kwargs": {**desc["tower"]["kwargs"], "dynamic_img_size": True}}
    if not pretrained:
        tower = {**tower, "pretrained": False, "weights": None}
    own = desc.get("tower_weights") or {}  # stage 1's tower per modality, else the vfm stage's
    towers = {m: build_vit({**tower, "weights": own[m]} if pretrained and m in own else tower)
              for m in desc["modalities"]}
    feat_dim = int(next(iter(towers.values())).num_features)
    return HiCAModel(towers, feat_dim, class_text, desc["embed_dim"], HiCALossConfig(**desc["loss"]),
                     RoiConfig(**desc["rois"]), desc["roi_size"])


def rebuild_hica(desc: Mapping[str, Any]) -> HiCAModel:
    """A saved run's model before its weights (class descriptors included) are loaded on top."""
    return build_hica(desc, torch.zeros(desc["num_classes"], desc["text_dim"]), pretrained=False)


def hica_run(cfg: Config, dataset: str, subset: str, seed: int, paths: RunPaths) -> SeedRun:
    """One seed of HiCA stage 2 on ``subset`` of ``dataset``'s train split."""
    h = cfg.hica
    tower = cfg.ei.tower(layout.VFM_WEIGHTS)
    data, classes = load_task(dataset, subset, seed, None, h.train.slices, norm=normalization(tower))
    if classes.get("volumetric"):
        raise DataError(f"{dataset}: HiCA's ROIs are 2-D; {dataset} holds volumes")
    names = list(classes["classes"])
    text_cfg, tower_weights = dict(h.text), None
    if h.pretrain["enabled"]:  # stage 1's outputs (stage hica_pretrain)
        stage1 = layout.hica_pretrain(dataset)
        tower_weights = {m: str(stage1.weights(seed, m)) for m in data.images.modalities}
        missing = [w for w in tower_weights.values() if not Path(w).is_file()]
        if missing or not text_folder(dataset, seed).is_dir():
            raise WeightsError(f"HiCA stage 1 output missing: {missing[0] if missing else text_folder(dataset, seed)}"
                               " (run the hica_pretrain stage, or set hica.pretrain.enabled: false)")
        text_cfg["model"] = str(text_folder(dataset, seed))
    text = build_text_tower(TextTowerConfig(**text_cfg))
    data, texts, groups, sentences = attach_captions(data, dataset, names, text)
    class_text = class_text_embedding(groups, sentences)
    desc = {**run_description("hica", dataset, METHOD, None, seed, classes, h.train), "subset": subset,
            "modalities": list(data.images.modalities), "tower": tower, "tower_weights": tower_weights,
            "text": text_cfg, "stage1": h.pretrain["enabled"],
            "text_dim": int(class_text.shape[1]), "embed_dim": h.embed_dim, "loss": dict(h.loss),
            "rois": dict(h.rois), "roi_size": h.roi_size, "descriptors": {"texts": len(texts),
                                                                          "per_class": [len(g) for g in groups]}}
    return SeedRun(label=f"{dataset}/hica/{subset}/seed{seed}", seed=seed, data=data, classes=names,
                   train=h.train, build=partial(build_hica, desc, class_text), description=desc,
                   weights=paths.weights(seed), checkpoint=paths.checkpoint(seed))


def run_train_hica(cfg: Config, dataset: str, subset: str) -> dict[str, Any]:
    """HiCA on ``subset`` for every seed; weights, metrics JSON and test predictions (medrepro.layout.hica)."""
    paths = layout.hica(dataset, METHOD, subset)
    return run_stage(paths, stage_header(dataset, method=METHOD, subset=subset),
                     partial(hica_run, cfg, dataset, subset, paths=paths), cfg.seeds, RunEnv.from_config(cfg))
