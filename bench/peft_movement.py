"""Do the PEFT adapters move? Unimodal PEFT on a prepared dataset under a training protocol, with diagnostics.

For each modality and method (default linear_probe, lora, mor): trains the adapted ``ei.vfm`` tower as the
``peft``/``preadapt`` stages do (``train:`` of the params file, overridable with ``--set key=value``), and reports
val/test mAP, the best epoch, the change of every parameter group at the selected epoch (LoRA B is zero-initialised:
its absolute norm; the others relative to their init, ``medrepro.train.diagnostics``), the mean per-step gradient
norm per group, and the largest |Δ probability| against the linear probe on the test split.

Run from the repository root (one thread, about a minute per protocol on synth_mm):
``python bench/peft_movement.py [--params params.yaml] [--set optimizer=adamw --set lr_min=1e-3] [--dataset synth_mm]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml

from medrepro import layout
from medrepro.config import TrainConfig, load_config
from medrepro.data.splits import ratio_column
from medrepro.ei.peft import build_peft_vit
from medrepro.models.backbones import normalization
from medrepro.models.classifier import MultiTowerClassifier
from medrepro.models.ei import classification_loss
from medrepro.train.classify import evaluate
from medrepro.train.diagnostics import grad_norms, relative_change, snapshot
from medrepro.train.loop import FitPlan, restore_state, run_epochs, steps_per_epoch
from medrepro.train.schedule import build_optimizer, build_scheduler
from medrepro.train.task import TaskData, load_task


def _value(text: str) -> object:
    """A ``--set`` value as YAML reads it, with ``1e-3`` (a string to YAML 1.1) as a float."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def measure(data: TaskData, classes: dict, m: str, method: str, vfm: dict, train: TrainConfig,
            seed: int) -> tuple[dict, np.ndarray]:
    """Train ``method`` on modality ``m``; its diagnostics record and test probabilities."""
    dev = torch.device("cpu")
    torch.manual_seed(seed)
    net = MultiTowerClassifier({m: build_peft_vit(vfm, method, len(classes["classes"]), classes["image_size"])})
    snap, steps, gen = snapshot(net), [], torch.Generator().manual_seed(seed)

    def loss_fn(idx: np.ndarray, g: torch.Generator) -> torch.Tensor:
        x = data.inputs(idx, dev, True, g, train.augment)
        return classification_loss(net(x), data.targets(idx, dev), data.multilabel)

    opt = build_optimizer(net.parameters(), train)
    spe = steps_per_epoch(len(data.train_idx), train)
    res = run_epochs(net, loss_fn, lambda: evaluate(net, data, data.val_idx, dev)[0]["mAP"], data.train_idx,
                     FitPlan(train.batch_size, spe, train.max_epochs, train.patience), opt,
                     build_scheduler(opt, train, spe), gen, dev, desc=f"{m}/{method}",
                     after_step=lambda: steps.append(grad_norms(net)))
    restore_state(net, res.best_state)
    test, _, probs = evaluate(net, data, data.test_idx, dev)
    return {"modality": m, "method": method, "val_mAP": round(res.best_score, 4), "test_mAP": round(test["mAP"], 4),
            "best_epoch": res.best_epoch, "epochs": res.epochs_run,
            "change": {k: float(f"{c.change:.3g}") for k, c in relative_change(net, snap).items()
                       if c.init_norm or c.norm},
            "grad_per_step": {k: float(f"{np.mean([s[k] for s in steps]):.3g}") for k in steps[0]
                              if any(s[k] for s in steps)}}, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default="synth_mm")
    parser.add_argument("--methods", default="linear_probe,lora,mor")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a train: key")
    parser.add_argument("--vfm", default=str(layout.VFM_WEIGHTS))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = load_config(args.params)
    overrides = {k: _value(v) for k, _, v in (s.partition("=") for s in args.set)}
    train = dataclasses.replace(cfg.train, **overrides)
    vfm, seed = cfg.ei.tower(Path(args.vfm)), cfg.seeds[0]
    modalities = load_task(args.dataset, ratio_column(1.0), seed, None, train.slices)[1]["modalities"]
    for m in modalities:
        data, classes = load_task(args.dataset, ratio_column(1.0), seed, [m], train.slices, norm=normalization(vfm))
        first = None
        for method in args.methods.split(","):
            record, probs = measure(data, dict(classes), m, method, vfm, train, seed)
            if first is None:
                first = probs
            else:
                record["max_abs_dprob_vs_first"] = round(float(np.abs(probs - first).max()), 4)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
