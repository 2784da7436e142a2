"""Downstream classification on real-data subsets (VAP-Diffusion Sec. 3.3 → results/table3.csv rows)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import nn

from medrepro import layout
from medrepro.config import Config
from medrepro.data.manifest import load_manifest
from medrepro.data.splits import ratio_column
from medrepro.layout import RunPaths
from medrepro.models.classifier import build_classifier
from medrepro.train.runner import RunEnv, SeedRun, run_stage
from medrepro.train.task import load_task


def rebuild_classifier(desc: Mapping[str, Any]) -> nn.Module:
    """The untrained classifier a downstream run's description names (its weights load on top)."""
    fusion, hidden = desc["fusion"] or ("mean_logits", 0)
    return build_classifier(desc["model"], list(desc["modalities"]), desc["num_classes"], desc["image_size"],
                            fusion, hidden)


def downstream_run(cfg: Config, dataset: str, method: str, train_data: str, ratio: float, seed: int,
                   modalities: list[str] | None = None, paths: RunPaths | None = None) -> SeedRun:
    """One seed of ``method`` trained on the ``ratio`` real subset of ``dataset`` (``modalities``: a subset of the
    dataset's; ``paths``: somewhere other than the pipeline's layout)."""
    ds = cfg.downstream
    paths = paths or layout.downstream(dataset, method, train_data, ratio)
    data, classes = load_task(dataset, ratio_column(ratio), seed, modalities, ds.train.slices)
    modalities = list(data.images.modalities)
    desc = {"builder": "classifier", "dataset": dataset, "method": method, "train_data": train_data, "ratio": ratio,
            "seed": seed, "modalities": modalities, "model": ds.models[method].as_dict(),
            "num_classes": len(classes["classes"]), "image_size": classes["image_size"], "train": ds.train.as_dict(),
            "fusion": (ds.fusion, ds.fusion_hidden) if len(modalities) > 1 else None}
    return SeedRun(label=f"{dataset}/{method}/{train_data}/{ratio:g}/seed{seed}", seed=seed, data=data,
                   classes=classes["classes"], train=ds.train, build=partial(rebuild_classifier, desc),
                   description=desc, weights=paths.weights(seed), checkpoint=paths.checkpoint(seed))


def run_downstream(cfg: Config, dataset: str, method: str, train_data: str, ratio: float) -> dict[str, Any]:
    """Train ``method`` on the ``ratio`` real subset for every seed; write weights, metrics and predictions."""
    _, classes = load_manifest(layout.prepared(dataset))
    header = {"dataset": dataset, "method": method, "train_data": train_data, "real_ratio": ratio,
              "classes": classes["classes"]}
    return run_stage(layout.downstream(dataset, method, train_data, ratio), header,
                     partial(downstream_run, cfg, dataset, method, train_data, ratio), cfg.seeds,
                     RunEnv.from_config(cfg))
