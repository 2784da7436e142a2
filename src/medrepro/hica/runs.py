"""Stage train_hica's library: HiCA stage 2 (hierarchical contrastive alignment, Sec. III-C) on one labelled subset
(``shot_K`` or ``ratio_r``) per seed, through the shared training runner (``HiCAModel.training_loss`` = Eq. 2).

The image towers and the text encoder start from stage 1 (``hica_pretrain``; with ``hica.pretrain.enabled: false``
from the ``vfm`` stage's towers and the encoder as shipped); the text side is then frozen and its sentence
embeddings are computed once per run. With ``hica.clip`` both towers come from one open_clip model
(``medrepro.models.clip_towers``): its image tower per modality (stage 1 fine-tunes it) and its text tower as
shipped. A K-shot run reads no validation label (its budget is K labelled images per class): it trains
``hica.train.max_epochs`` and scores the last epoch; a ratio run selects its best epoch by validation mAP, as every
classifier here (``medrepro.train.classify``). Test scores are the class-descriptor similarities (softmax over
the classes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrepro import layout
from medrepro.config import Config
from medrepro.errors import DataError, ParamsError, WeightsError
from medrepro.hica.data import attach_captions, attach_masks, attach_roi_images
from medrepro.hica.methods import ABLATIONS, NOISY, UNSEEN, method_name
from medrepro.hica.noise import corrupt
from medrepro.hica.pretrain_runs import text_folder
from medrepro.layout import RunPaths
from medrepro.models.backbones import build_vit, normalization
from medrepro.models.clip_towers import (
    ClipSentenceEncoder,
    clip_normalization,
    configured_clip,
    image_towers,
    load_clip,
)
from medrepro.models.hica import HiCALossConfig, HiCAModel, class_text_embedding
from medrepro.models.hica_rois import RoiConfig
from medrepro.models.text import TextTower, TextTowerConfig, build_text_tower
from medrepro.train.runner import RunEnv, SeedRun, run_description, run_stage, stage_header
from medrepro.train.saved import load_saved, read_weights
from medrepro.train.task import TaskData, load_task


def build_clip_hica(desc: Mapping[str, Any], class_text: torch.Tensor, pretrained: bool = True) -> HiCAModel:
    """HiCA on one open_clip model's towers (``hica.clip``): CLIP's projections, identity-initialised heads; the
    image towers from stage 1 where it ran."""
    clip = load_clip(desc["clip"]["model"], desc["clip"]["weights"], pretrained)
    towers = image_towers(clip, desc["modalities"])
    for m, path in (desc.get("tower_weights") or {}).items() if pretrained else ():
        towers[m].load_state_dict(read_weights(Path(path), "run the hica_pretrain stage"))
    dim = next(iter(towers.values())).num_features
    return HiCAModel(towers, dim, class_text, dim, HiCALossConfig(**desc["loss"]), RoiConfig(**desc["rois"]),
                     desc["roi_size"], identity_heads=True)


def build_hica(desc: Mapping[str, Any], class_text: torch.Tensor, pretrained: bool = True) -> HiCAModel:
    """The HiCA model a run's description names, with ``class_text`` (C, text_dim) as its class descriptors."""
    if desc.get("clip"):
        return build_clip_hica(desc, class_text, pretrained)
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


def load_hica(weights: Path) -> tuple[HiCAModel, dict[str, Any]]:
    """A saved HiCA run and its description."""
    return load_saved(weights, "hica", rebuild_hica)


@dataclass
class HiCASetup:
    """What a HiCA-style run builds from: its text tower and the description its model is built from."""

    text_tower: TextTower | ClipSentenceEncoder
    desc: dict[str, Any]

    def model(self, class_text: torch.Tensor) -> HiCAModel:
        return build_hica(self.desc, class_text)


def hold_out(data: TaskData, classes: Sequence[int]) -> TaskData:
    """``data`` without the samples of ``classes`` in training and validation (so neither training nor model
    selection sees them); the test split keeps every class."""
    def keep(idx: np.ndarray) -> np.ndarray:
        return idx[~np.isin(data.labels[idx], list(classes))]

    train = keep(data.train_idx)
    return dataclasses.replace(data, train_idx=train, val_idx=keep(data.val_idx), n_real=int(len(train)))


def unseen_classes(cfg: Config, names: Sequence[str]) -> list[int]:
    """Indices of ``hica.unseen.classes`` among the dataset's classes (each must be one, and one must stay)."""
    wanted = list(cfg.hica.unseen["classes"])
    lacking = [c for c in wanted if c not in names]
    if lacking:
        raise ParamsError(f"hica.unseen.classes lists {lacking[0]!r}, which is not a class of the dataset "
                          f"({', '.join(names)})")
    if len(set(wanted)) >= len(names):
        raise ParamsError("hica.unseen.classes holds out every class: nothing is left to train on")
    return [list(names).index(c) for c in wanted]


def hica_inputs(cfg: Config, dataset: str, subset: str, seed: int, ablation: str | None = None,
                stage1: bool = True) -> tuple[TaskData, list[str], dict[str, Any], HiCASetup]:
    """The task of ``subset``, class names, the run description and the setup: stage 1's towers and text encoder
    (or, with ``hica.pretrain.enabled: false`` or ``stage1=False``, the vfm towers / CLIP as shipped and the shipped
    encoder), Eq. 2's knobs with ``ablation`` applied."""
    h = cfg.hica
    clip_cfg, clip = configured_clip(h.clip)
    tower = None if clip_cfg else cfg.ei.tower(layout.VFM_WEIGHTS)
    norm = clip_normalization(clip) if clip is not None else normalization(tower)
    data, classes = load_task(dataset, subset, seed, None, h.train.slices, norm=norm)
    if classes.get("volumetric"):
        raise DataError(f"{dataset}: HiCA's ROIs are 2-D; {dataset} holds volumes")
    names = list(classes["classes"])
    held_out = unseen_classes(cfg, names) if ablation == UNSEEN else []
    data = hold_out(data, held_out) if held_out else data
    text_cfg, tower_weights, stage1 = dict(h.text), None, stage1 and bool(h.pretrain["enabled"])
    if stage1:  # stage 1's outputs (stage hica_pretrain)
        pre = layout.hica_pretrain(dataset)
        tower_weights = {m: str(pre.weights(seed, m)) for m in data.images.modalities}
        missing = [w for w in tower_weights.values() if not Path(w).is_file()]
        if not clip_cfg:  # CLIP's text tower stays as shipped; stage 1 fine-tunes the other encoders
            text_cfg["model"] = str(text_folder(dataset, seed))
            if not text_folder(dataset, seed).is_dir():
                missing.append(text_cfg["model"])
        if missing:
            raise WeightsError(f"HiCA stage 1 output missing: {missing[0]} (run the hica_pretrain stage, or set "
                               "hica.pretrain.enabled: false)")
    if clip is not None:
        text: TextTower | ClipSentenceEncoder = ClipSentenceEncoder(clip, clip_cfg["model"])
        text_cfg = None
    else:
        text = build_text_tower(TextTowerConfig(**text_cfg))
    method = method_name(ablation)
    desc = {**run_description("hica", dataset, method, None, seed, classes, h.train), "subset": subset,
            "modalities": list(data.images.modalities), "tower": tower, "tower_weights": tower_weights,
            "clip": clip_cfg, "text": text_cfg, "stage1": stage1, "text_dim": int(text.dim),
            "embed_dim": int(text.dim) if clip is not None else h.embed_dim,
            "loss": {**h.loss, **ABLATIONS.get(ablation or "", {})}, "rois": dict(h.rois), "roi_size": h.roi_size,
            "roi_source": h.roi_source, "roi_image_size": h.roi_image_size if h.roi_source == "full" else None,
            "unseen_classes": [names[k] for k in held_out]}
    return data, names, desc, HiCASetup(text, desc)


def hica_run(cfg: Config, dataset: str, subset: str, seed: int, paths: RunPaths,
             ablation: str | None = None) -> SeedRun:
    """One seed of HiCA stage 2 (or a Table II/IV/V variant) on ``subset`` of ``dataset``'s train split."""
    data, names, desc, setup = hica_inputs(cfg, dataset, subset, seed, ablation)
    noise = None
    if ablation in NOISY:
        kind = ablation.removeprefix("noise_")
        noise = partial(corrupt, kind=kind, rate=cfg.hica.noise["rate"], seed=seed, terms=cfg.hica.noise["terms"])
        desc["noise"] = {"kind": kind, "rate": cfg.hica.noise["rate"], "terms": cfg.hica.noise["terms"]}
    data, texts, groups, sentences = attach_captions(data, dataset, names, setup.text_tower, noise)
    data = attach_masks(data, dataset, RoiConfig(**desc["rois"]))  # lesion masks where the ROI mode uses them
    desc["roi_masks"] = sorted(data.masks)  # the modalities whose ROIs may come from lesion masks
    if desc["loss"]["lambda_local"]:  # crops from the ROI image cache (hica.roi_source full); Sec. III-B.2
        data = attach_roi_images(data, dataset, cfg.hica.roi_source, cfg.hica.roi_image_size)
    class_text = class_text_embedding(groups, sentences)
    desc["descriptors"] = {"texts": len(texts), "per_class": [len(g) for g in groups]}
    return SeedRun(label=f"{dataset}/{desc['method']}/{subset}/seed{seed}", seed=seed, data=data, classes=names,
                   train=cfg.hica.train, build=partial(build_hica, desc, class_text), description=desc,
                   weights=paths.weights(seed), checkpoint=paths.checkpoint(seed))


def run_train_hica(cfg: Config, dataset: str, subset: str, ablation: str | None = None) -> dict[str, Any]:
    """HiCA (or an ablation) on ``subset`` for every seed; weights, metrics JSON and test predictions."""
    method = method_name(ablation)
    paths = layout.hica(dataset, method, subset)
    return run_stage(paths, stage_header(dataset, method=method, subset=subset),
                     partial(hica_run, cfg, dataset, subset, paths=paths, ablation=ablation), cfg.seeds,
                     RunEnv.from_config(cfg))
