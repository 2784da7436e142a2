"""Optimisers and learning-rate schedules of the training protocols (EI Sec. 4.1; downstream: our choice, see
docs/vap-diffusion.md)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from medrepro.config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (EI: 0.95, wd 1e-4) or AdamW, starting at ``lr_max`` (schedules scale it).

    ``foreach=True``: one multi-tensor update instead of a Python loop over parameters (torch picks it by itself
    only on CUDA); the same arithmetic per element.
    """
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr_max, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               foreach=True)
    return torch.optim.AdamW(params, lr=cfg.lr_max, weight_decay=cfg.weight_decay, foreach=True)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule.

    ``cyclic`` — EI Sec. 4.1: CyclicLR between lr_min and lr_max, half-cycle ``warmup_epochs`` epochs (the first
    ramp is the warm-up), amplitude × ``cycle_decay`` per cycle (the authors' code uses 0.8). Momentum cycling is
    off unless ``cycle_momentum`` (torch's default, which the authors' code inherits and which overrides 0.95).
    ``cosine`` — linear warm-up over ``warmup_epochs`` then cosine decay to lr_min over ``max_epochs``.
    """
    if cfg.schedule == "cyclic":
        decay = float(cfg.cycle_decay)
        cycle_momentum = cfg.cycle_momentum and cfg.optimizer == "sgd"
        return torch.optim.lr_scheduler.CyclicLR(
            opt, base_lr=cfg.lr_min, max_lr=cfg.lr_max,
            step_size_up=max(1, cfg.warmup_epochs * steps_per_epoch),
            scale_fn=lambda cycle: decay ** (cycle - 1), scale_mode="cycle",
            cycle_momentum=cycle_momentum, base_momentum=0.8, max_momentum=0.9,
        )
    warm = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.max_epochs * steps_per_epoch, warm + 1)
    floor = cfg.lr_min / cfg.lr_max

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
