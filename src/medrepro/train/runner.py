"""The one training runner every training stage uses: per-seed runs, resume, artifacts, metrics and predictions.

A stage describes each of its runs as a ``SeedRun`` (its data, how to build the model right after seeding, the
description that rebuilds it, where its weights and checkpoint go) and hands them to ``run_seeds``. Each run is
seeded, built, trained by ``train_classifier`` (resuming from its checkpoint), and leaves:

- ``<weights>.safetensors`` and ``<weights>.json`` (the description plus how the best epoch was selected), so a
  model rebuilds from its own files (``medrepro.train.saved``), never from today's params.yaml;
- one record in the stage's metrics JSON (test metrics, ``samples_per_s``, ``peak_mem_mb``, ``wall_s``, …);
- its test predictions (run facts: seed, n_real, n_synthetic, trainable_params; then sample id, label, one score
  per class) in the stage's predictions parquet, from which every table is computed (``medrepro.report.scores``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from medrepro import layout
from medrepro.config import Config, TrainConfig
from medrepro.data.manifest import load_manifest
from medrepro.devices import prepare_model, resolve_device, seed_everything
from medrepro.io import atomic_path, write_json
from medrepro.layout import RunPaths
from medrepro.models.adapters import count_trainable
from medrepro.train.artifacts import finish_run
from medrepro.train.classify import train_classifier
from medrepro.train.loop import fingerprint
from medrepro.train.parallel import run_side_by_side
from medrepro.train.task import TaskData

log = logging.getLogger("medrepro")

J = TypeVar("J")


@dataclass(frozen=True)
class RunEnv:
    """Where and how runs train: device, precision, torch.compile."""

    device: torch.device
    precision: str
    compile: bool

    @classmethod
    def from_config(cls, cfg: Config) -> RunEnv:
        return cls(device=resolve_device(cfg.device), precision=cfg.precision, compile=cfg.compile)


def _full_state(net: nn.Module, model: nn.Module) -> dict[str, torch.Tensor]:
    return net.state_dict()


@dataclass
class SeedRun:
    """One training run of a stage (one seed, or one seed and modality)."""

    label: str  # progress bar and log name
    seed: int
    data: TaskData
    classes: Sequence[str]
    train: TrainConfig
    build: Callable[[], nn.Module]  # called right after seeding, so that initial weights depend on the seed only
    description: dict[str, Any]  # JSON-able: what rebuilds the model (saved beside the weights)
    weights: Path
    checkpoint: Path | None
    saved_state: Callable[[nn.Module, nn.Module], Mapping[str, torch.Tensor]] = _full_state  # (net, prepared)
    trainable: Callable[[nn.Module], int] = partial(count_trainable, exclude=())
    probe: Callable[[nn.Module], dict[str, Any]] | None = None  # extra test-split analysis of the trained net
    keys: dict[str, Any] = field(default_factory=dict)  # extra record and prediction columns (e.g. modality)


def train_seed(run: SeedRun, env: RunEnv) -> tuple[dict[str, Any], pd.DataFrame]:
    """Seed, build, train (resuming), save weights + description; return the run's record and test predictions."""
    gen = seed_everything(run.seed)
    net = run.build()
    model = prepare_model(net, env.device, env.compile)
    fit, record, probs = train_classifier(model, run.data, run.train, gen, env.device, env.precision,
                                          run.checkpoint, fingerprint(run.description), desc=run.label)
    if run.probe is not None:
        record["test_probe"] = run.probe(net)
    selection = {"rule": record["selection"], "val_mAP": record["val_mAP"], "best_epoch": fit.best_epoch,
                 "epochs_run": fit.epochs_run}
    finish_run(run.weights, run.saved_state(net, model), {**run.description, "selection": selection},
               run.checkpoint)
    log.info("%s: test %s", run.label, {k: round(v, 4) for k, v in record["test"].items()})
    facts = {"seed": run.seed, **run.keys, "n_real": run.data.n_real, "n_synthetic": run.data.n_synthetic,
             "trainable_params": run.trainable(net)}
    return {**facts, **record}, predictions_frame(run.data, run.data.test_idx, probs, run.classes, facts)


def _train_job(make_run: Callable[[J], SeedRun], env: RunEnv, job: J) -> tuple[dict[str, Any], pd.DataFrame]:
    return train_seed(make_run(job), env)


def run_seeds(make_run: Callable[[J], SeedRun], jobs: Sequence[J], env: RunEnv,
              side_by_side: bool = False) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every job's run, in order; ``side_by_side`` trains independent runs in forked workers on CPU
    (``medrepro.train.parallel``: same numbers as one after another). ``make_run`` must then be picklable (a
    module-level function or a ``functools.partial`` of one): runs are built inside the workers."""
    job_fn = partial(_train_job, make_run, env)
    results = run_side_by_side(job_fn, jobs, env.device) if side_by_side else [job_fn(j) for j in jobs]
    return [r for r, _ in results], pd.concat([p for _, p in results], ignore_index=True)


def run_description(builder: str, dataset: str, method: str, ratio: float, seed: int, classes: Mapping[str, Any],
                    train: TrainConfig) -> dict[str, Any]:
    """What every run's description holds: how to rebuild it (``builder``, see ``train.saved``), what it was
    trained on and how; each training kind adds its model's own keys."""
    return {"builder": builder, "dataset": dataset, "method": method, "ratio": ratio, "seed": seed,
            "num_classes": len(classes["classes"]), "image_size": classes["image_size"], "train": train.as_dict()}


def stage_header(dataset: str, **fields: Any) -> dict[str, Any]:
    """The head of a stage's metrics record: dataset, ``fields`` (None values left out), classes, modalities."""
    _, classes = load_manifest(layout.prepared(dataset))
    return {"dataset": dataset, **{k: v for k, v in fields.items() if v is not None},
            "classes": classes["classes"], "modalities": classes["modalities"]}


def run_stage(paths: RunPaths, header: Mapping[str, Any], make_run: Callable[[J], SeedRun], jobs: Sequence[J],
              env: RunEnv, side_by_side: bool = False) -> dict[str, Any]:
    """A training stage: every run of ``jobs``, then the metrics JSON (``header`` + ``runs``) and predictions."""
    paths.checkpoints.mkdir(parents=True, exist_ok=True)  # exists even when empty: a DVC output of the stage
    runs, predictions = run_seeds(make_run, jobs, env, side_by_side)
    record = {**header, "runs": runs}
    write_outputs(paths, record, predictions)
    return record


def predictions_frame(data: TaskData, idx: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                      keys: Mapping[str, Any]) -> pd.DataFrame:
    """One row per sample of ``idx``: ``keys`` columns, ``sample_id``, the label (``label`` or ``label_<class>``
    when multi-label) and ``score_<class>`` probabilities."""
    ids = data.sample_ids[idx] if data.sample_ids is not None else idx.astype(str)
    frame: dict[str, Any] = {k: [v] * len(idx) for k, v in keys.items()}
    frame["sample_id"] = ids
    labels = data.labels[idx]
    if data.multilabel:
        frame.update({f"label_{c}": labels[:, i].astype(np.int8) for i, c in enumerate(classes)})
    else:
        frame["label"] = labels.astype(np.int64)
    frame.update({f"score_{c}": probs[:, i].astype(np.float32) for i, c in enumerate(classes)})
    return pd.DataFrame(frame)


def write_outputs(paths: RunPaths, record: Mapping[str, Any], predictions: pd.DataFrame) -> None:
    """The stage's metrics JSON and predictions parquet, each written atomically."""
    with atomic_path(paths.predictions) as tmp:
        predictions.to_parquet(tmp, index=False)
    write_json(paths.metrics, record)
