"""Downstream classification on real-data subsets, with or without synthetic images (VAP-Diffusion Sec. 3.3 →
results/table3.csv rows)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from medrepro import layout
from medrepro.config import Config
from medrepro.data.splits import ratio_column
from medrepro.layout import RunPaths
from medrepro.models.classifier import build_classifier
from medrepro.train.runner import RunEnv, SeedRun, run_description, run_stage, stage_header
from medrepro.train.saved import load_saved
from medrepro.train.task import load_training_task


def rebuild_classifier(desc: Mapping[str, Any]) -> nn.Module:
    """The untrained classifier a downstream run's description names (its weights load on top)."""
    fusion, hidden = desc["fusion"]  # a one-modality classifier ignores it
    return build_classifier(desc["model"], list(desc["modalities"]), desc["num_classes"], desc["image_size"],
                            fusion, hidden)


def load_classifier(weights: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A saved downstream classifier and its description (its state is complete: no pretrained weights fetched)."""
    def build(desc: Mapping[str, Any]) -> nn.Module:
        return rebuild_classifier({**desc, "model": {**desc["model"], "pretrained": False, "weights": None}})

    return load_saved(weights, "classifier", build)


def downstream_run(cfg: Config, dataset: str, method: str, train_data: str, ratio: float | None, seed: int,
                   modalities: list[str] | None = None, paths: RunPaths | None = None,
                   subset: str | None = None, model: Mapping[str, Any] | None = None) -> SeedRun:
    """One seed of ``method`` trained on the ``ratio`` real subset of ``dataset`` (``modalities``: a subset of the
    dataset's; ``paths``: somewhere other than the pipeline's layout; ``subset``: another labelled subset, e.g.
    ``shot_5``, instead of the ratio's; ``model``: a model block other than ``downstream.models[method]``)."""
    ds = cfg.downstream
    paths = paths or layout.downstream(dataset, method, train_data, ratio)
    data, classes = load_training_task(dataset, train_data, subset or ratio_column(ratio), seed, modalities,
                                       ds.train.slices, ds.synthetic)
    modalities = list(data.images.modalities)
    desc = {**run_description("classifier", dataset, method, ratio, seed, classes, ds.train),
            "train_data": train_data, "synthetic": ds.synthetic.__dict__ if data.n_synthetic else None,
            "modalities": modalities, "model": dict(model) if model is not None else ds.models[method].as_dict(),
            "fusion": (ds.fusion, ds.fusion_hidden)}
    desc["subset"] = subset or ratio_column(ratio)
    return SeedRun(label=f"{dataset}/{method}/{train_data}/{desc['subset']}/seed{seed}", seed=seed, data=data,
                   classes=classes["classes"], train=ds.train, build=partial(rebuild_classifier, desc),
                   description=desc, weights=paths.weights(seed), checkpoint=paths.checkpoint(seed))


def run_downstream(cfg: Config, dataset: str, method: str, train_data: str, ratio: float) -> dict[str, Any]:
    """Train ``method`` on the ``ratio`` real subset for every seed; write weights, metrics and predictions."""
    header = stage_header(dataset, method=method, train_data=train_data, real_ratio=ratio)
    return run_stage(layout.downstream(dataset, method, train_data, ratio), header,
                     partial(downstream_run, cfg, dataset, method, train_data, ratio), cfg.seeds,
                     RunEnv.from_config(cfg))
