"""The training loop: per-epoch validation, early stopping on val mAP, best-checkpoint keeping, resume.

EI Sec. 4.1: validate every epoch, stop after ``patience`` validations without gain, keep the best checkpoint.
A checkpoint of the training state (the weights that train, buffers, optimiser, scheduler, RNG incl. CUDA's,
history) is written atomically after every epoch; rerunning after an interruption resumes from it and ends with
the same metrics as an uninterrupted run. Frozen weights (``requires_grad=False``: a foundation model's base
under PEFT) are left out of checkpoints and of the kept best state — they come from the model as built, and a
digest of them in the checkpoint makes sure they are the same ones; a model lists frozen parameters that do
change (an EMA copy) in ``checkpoint_keep``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medrepro.config import TrainConfig
from medrepro.data.loaders import epoch_batches
from medrepro.devices import autocast
from medrepro.errors import DataError
from medrepro.io import atomic_path
from medrepro.progress import progress_disabled
from medrepro.train.schedule import build_optimizer, build_scheduler

log = logging.getLogger("medrepro")


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    samples_per_s: float
    train_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    resumed_from: int | None = None


def fingerprint(obj: Any) -> str:
    """Short stable hash of a JSON-able description of the run (refuses to resume a different run)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FitPlan:
    """How many batches of which size per epoch, for how many epochs, with which early-stopping patience."""

    batch_size: int
    steps_per_epoch: int
    max_epochs: int
    patience: int


def steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    """Full batches per epoch, at least ``min_steps_per_epoch`` (tiny subsets repeat within an epoch)."""
    bs = cfg.batch_size
    full = n_train // bs if n_train >= bs else 1
    return max(full, cfg.min_steps_per_epoch)


def fit(model: torch.nn.Module, loss_fn: Callable[[np.ndarray, torch.Generator], torch.Tensor],
        validate: Callable[[], float], train_idx: np.ndarray, cfg: TrainConfig, gen: torch.Generator,
        device: torch.device, precision: str = "auto", ckpt: Path | None = None, run_id: str = "",
        desc: str = "train") -> FitResult:
    """Train ``model`` with ``loss_fn(batch_indices, gen)`` by the protocol ``cfg``; ``validate()`` returns the score
    to maximise."""
    opt = build_optimizer(model.parameters(), cfg)
    spe = steps_per_epoch(len(train_idx), cfg)
    sched = build_scheduler(opt, cfg, spe)
    plan = FitPlan(batch_size=cfg.batch_size, steps_per_epoch=spe, max_epochs=cfg.max_epochs, patience=cfg.patience)
    return run_epochs(model, loss_fn, validate, train_idx, plan, opt, sched, gen, device, precision, ckpt, run_id,
                      desc)


def frozen_keys(model: torch.nn.Module) -> frozenset[str]:
    """State-dict keys of the parameters training never changes: ``requires_grad=False``, except under the
    prefixes of ``model.checkpoint_keep``."""
    keep = tuple(getattr(model, "checkpoint_keep", ()))
    return frozenset(n for n, p in model.named_parameters() if not p.requires_grad and not n.startswith(keep))


def training_state(model: torch.nn.Module, frozen: frozenset[str]) -> dict[str, torch.Tensor]:
    """The model's state without its frozen weights (what a checkpoint and the best epoch keep)."""
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def restore_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a ``training_state`` into ``model``; every key it lacks must be a frozen weight of the model."""
    result = model.load_state_dict(state, strict=False)
    lacking = sorted(set(result.missing_keys) - frozen_keys(model))
    if result.unexpected_keys or lacking:
        raise RuntimeError(f"training state does not fit the model: unexpected {result.unexpected_keys[:3]}, "
                           f"missing {lacking[:3]}")


def _digest(model: torch.nn.Module, frozen: frozenset[str]) -> list[float]:
    """Sum and sum of squares (float64) of the frozen weights: tells a checkpoint whether they are the same."""
    tensors = [v.detach().double() for k, v in model.state_dict().items() if k in frozen]
    return [float(sum(t.sum() for t in tensors)), float(sum(t.square().sum() for t in tensors))] if tensors else []


def run_epochs(model: torch.nn.Module, loss_fn: Callable[[np.ndarray, torch.Generator], torch.Tensor],
               validate: Callable[[], float] | None, train_idx: np.ndarray, plan: FitPlan,
               opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator,
               device: torch.device, precision: str = "auto", ckpt: Path | None = None, run_id: str = "",
               desc: str = "train", after_step: Callable[[], None] | None = None) -> FitResult:
    """The epoch loop every training shares: steps, per-epoch validation and early stopping, checkpoint, resume.

    Without ``validate`` (pretraining, generators) every epoch runs and the last one counts as the best (no state
    copy kept). ``after_step`` runs after every optimiser step (e.g. an EMA update of weights inside ``model``).
    """
    state = {"epoch": 0, "best": -float("inf"), "best_epoch": 0, "bad": 0, "history": [], "samples": 0,
             "train_s": 0.0, "best_state": None}
    resumed = None
    frozen = frozen_keys(model)
    digest = _digest(model, frozen) if ckpt is not None else []
    if ckpt is not None and ckpt.exists():
        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises several types for a truncated or damaged file
            raise DataError(f"corrupt checkpoint {ckpt} ({type(exc).__name__}); delete it to train this run "
                            "from the start") from exc
        if saved.get("run_id") == run_id and saved.get("frozen_digest") == digest:
            restore_state(model, saved["model"])
            opt.load_state_dict(saved["opt"])
            sched.load_state_dict(saved["sched"])
            gen.set_state(saved["gen"])
            torch.set_rng_state(saved["torch_rng"])
            if saved.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda_rng"])
            state = saved["state"]
            resumed = state["epoch"]
            log.info("%s: resumed from epoch %d (%s)", desc, resumed, ckpt)
        else:
            log.info("%s: ignoring checkpoint of a different run or other frozen weights (%s)", desc, ckpt)
    spe = plan.steps_per_epoch
    bar = tqdm(total=plan.max_epochs, initial=state["epoch"], desc=desc, disable=progress_disabled())
    while state["epoch"] < plan.max_epochs and state["bad"] < plan.patience:
        model.train()
        t0 = time.perf_counter()
        loss_sum, steps = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no
        for step, idx in enumerate(epoch_batches(train_idx, plan.batch_size, gen, spe)):  # host sync per step
            if step >= spe:
                break
            with autocast(device, precision):
                loss = loss_fn(idx, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            loss_sum += loss.detach().double()
            steps += 1
            state["samples"] += len(idx)
        mean_loss = float(loss_sum) / max(steps, 1)  # the epoch's one sync (it also ends the epoch's timing)
        state["train_s"] += time.perf_counter() - t0
        state["epoch"] += 1
        entry = {"epoch": state["epoch"], "loss": mean_loss, "lr": opt.param_groups[0]["lr"]}
        if validate is None:
            state.update(best_epoch=state["epoch"])
        else:
            model.eval()
            with torch.no_grad():
                score = float(validate())
            entry["val"] = score
            if score > state["best"]:  # NaN (no class with a positive in val) never improves
                best = {k: v.detach().cpu() for k, v in training_state(model, frozen).items()}
                state.update(best=score, best_epoch=state["epoch"], bad=0, best_state=copy.deepcopy(best))
            else:
                state["bad"] += 1
        state["history"].append(entry)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in entry.items() if k in ("loss", "val")})
        if ckpt is not None:
            with atomic_path(ckpt) as tmp:
                cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
                torch.save({"run_id": run_id, "model": training_state(model, frozen), "frozen_digest": digest,
                            "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(),
                            "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng, "state": state}, tmp)
    bar.close()
    if validate is not None and state["best_state"] is None and state["epoch"]:
        raise DataError(f"{desc}: the validation score was undefined (NaN) after every epoch, so no epoch can be "
                        "selected; the val split lacks a positive sample of every class (enlarge it)")
    return FitResult(best_epoch=state["best_epoch"], best_score=state["best"], epochs_run=state["epoch"],
                     samples_per_s=state["samples"] / max(state["train_s"], 1e-9), train_s=state["train_s"],
                     history=state["history"], best_state=state["best_state"] or {}, resumed_from=resumed)
