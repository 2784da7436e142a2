"""Stage train_hica's library: HiCA stage 2 (hierarchical contrastive alignment, Sec. III-C) on one labelled subset
(``shot_K`` or ``ratio_r``) per seed, through the shared training runner (``HiCAModel.training_loss`` = Eq. 2).

The image towers start from the ``vfm`` stage's weights (the EI towers' pretraining); the text side is a frozen
sentence encoder (``hica.text``) whose embeddings are computed once per run. Best epoch by validation mAP, as every
classifier here; test scores are the class-descriptor similarities (softmax over the classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch

from medrepro import layout
from medrepro.config import Config
from medrepro.diffusion.text import TextTowerConfig, build_text_tower
from medrepro.errors import DataError
from medrepro.hica.data import attach_captions
from medrepro.hica.rois import RoiConfig
from medrepro.layout import RunPaths
from medrepro.models.backbones import build_vit, normalization
from medrepro.models.hica import HiCALossConfig, HiCAModel, class_text_embedding
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
    towers = {m: build_vit(tower) for m in desc["modalities"]}
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
    text = build_text_tower(TextTowerConfig(**h.text))
    data, texts, groups, sentences = attach_captions(data, dataset, names, text)
    class_text = class_text_embedding(groups, sentences)
    desc = {**run_description("hica", dataset, METHOD, None, seed, classes, h.train), "subset": subset,
            "modalities": list(data.images.modalities), "tower": tower, "text": dict(h.text),
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
