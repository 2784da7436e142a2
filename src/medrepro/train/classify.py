"""Supervised training and evaluation of a classifier on a prepared dataset (shared by downstream and MoR)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrepro.config import TrainConfig
from medrepro.devices import autocast, peak_mem_mb
from medrepro.metrics.classification import classification_metrics, per_class
from medrepro.models.ei import classification_loss
from medrepro.train.loop import FitResult, fit, restore_state
from medrepro.train.task import TaskData

#: how a run's scored epoch is chosen: by validation mAP, or (K-shot) the last of a fixed schedule
SELECTION = {False: "best_val_mAP", True: "fixed_schedule_last_epoch"}


@torch.no_grad()
def predict(model: nn.Module | Callable, data: TaskData, idx: np.ndarray, device: torch.device,
            batch_size: int = 64, precision: str = "auto") -> np.ndarray:
    """Probabilities (softmax or sigmoid) for samples ``idx``, in order (the model is put in eval mode)."""
    if isinstance(model, nn.Module):
        model.eval()
    batches = forward_batches(model, data, idx, device, batch_size, precision)
    return np.concatenate([to_probs(logits, data.multilabel) for logits in batches])


def forward_batches(fn: Callable[[dict[str, torch.Tensor]], Any], data: TaskData, idx: np.ndarray,
                    device: torch.device, batch_size: int = 64, precision: str = "auto") -> Iterator[Any]:
    """``fn(inputs)`` under autocast for samples ``idx`` in order, ``batch_size`` at a time (inference inputs)."""
    for i in range(0, len(idx), batch_size):
        x = data.inputs(idx[i:i + batch_size], device, train=False, gen=None, aug=None)
        with autocast(device, precision):
            out = fn(x)
        yield out


def to_probs(logits: torch.Tensor, multilabel: bool) -> np.ndarray:
    """Sigmoid (multi-label) or softmax probabilities of ``logits`` (cast to float) as a numpy array."""
    logits = logits.float()
    return (torch.sigmoid(logits) if multilabel else logits.softmax(-1)).cpu().numpy()


def evaluate(model: nn.Module, data: TaskData, idx: np.ndarray, device: torch.device,
             precision: str = "auto") -> tuple[dict[str, float], dict[str, list[float]], np.ndarray]:
    """Headline metrics, per-class metrics and the probabilities on ``idx``."""
    probs = predict(model, data, idx, device, precision=precision)
    y = data.labels[idx]
    pc = per_class(y, probs, data.multilabel)
    return classification_metrics(y, probs, data.multilabel), {k: v.tolist() for k, v in pc.items()}, probs


def train_classifier(model: nn.Module, data: TaskData, cfg: TrainConfig, gen: torch.Generator,
                     device: torch.device, precision: str = "auto", ckpt: Path | None = None, run_id: str = "",
                     desc: str = "train") -> tuple[FitResult, dict[str, Any], np.ndarray]:
    """Fit on ``train_idx`` selecting the best epoch by val mAP, or (``data.fixed_schedule``: K-shot runs, no
    validation labels) for every epoch of ``cfg.max_epochs`` keeping the last; score that model on ``test_idx``.

    Returns the fit result, a metrics record (test metrics, per-class, val best, throughput, memory, time) and the
    test probabilities (rows of ``test_idx``).
    """
    t0 = time.perf_counter()
    aug = cfg.augment

    custom = getattr(model, "training_loss", None)  # EI: L_p + λ1 L_aa + λ2 L_ag (Eq. 8)

    def loss_fn(idx: np.ndarray, g: torch.Generator) -> torch.Tensor:
        inputs, y = data.inputs(idx, device, True, g, aug), data.targets(idx, device)
        return custom(inputs, y) if custom is not None else classification_loss(model(inputs), y, data.multilabel)

    def validate() -> float:
        return evaluate(model, data, data.val_idx, device, precision)[0]["mAP"]

    fixed = data.fixed_schedule
    result = fit(model, loss_fn, None if fixed else validate, data.train_idx, cfg, gen, device, precision, ckpt,
                 run_id, desc)
    if not fixed:
        restore_state(model, result.best_state)
    t_test = time.perf_counter()
    test, test_pc, test_probs = evaluate(model, data, data.test_idx, device, precision)
    t_test = time.perf_counter() - t_test
    record = {
        "test": test,
        "test_per_class": test_pc,
        "val_mAP": None if fixed else result.best_score,
        "selection": SELECTION[fixed],
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "history": result.history,
        "samples_per_s": result.samples_per_s,
        "train_s": result.train_s,
        "inference_images_per_s": len(data.test_idx) / max(t_test, 1e-9),  # test split, metrics included
        "peak_mem_mb": peak_mem_mb(device),
        "wall_s": time.perf_counter() - t0,
        "n_train": int(len(data.train_idx)),
        "resumed_from_epoch": result.resumed_from,
    }
    return result, record, test_probs
