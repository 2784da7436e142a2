"""HiCA Table I baselines, each on the same labelled subsets and test split as HiCA (paths: layout.hica):

- ``zeroshot`` — CLIP-style prompt matching with the towers and text encoder as shipped, before any HiCA stage
  (stage 1's fine-tuned towers are never read: HiCA Sec. IV-A, "without any task-specific fine-tuning"): a sample is
  assigned the class whose name template ("An image showing drusen.") its image is most similar to. With
  ``hica.clip`` that is CLIP's own zero-shot classifier (its weights and projections untouched, no training). The
  embedded towers are no pretrained CLIP, so their projection heads are first aligned on the train
  split's (image, caption) pairs with the CLIP loss — captions come from the caption stage, which never reads a
  label, and the towers stay frozen. No label is used, not even for model selection (fixed epochs). One run per
  seed serves every K.
- ``cnn`` — the supervised CNN: ``hica.baselines.cnn`` (a ``downstream.models`` key) trained on the subset by the
  downstream protocol, from a random initialisation. On a K-shot subset it reads no validation label, as HiCA:
  ``downstream.train.max_epochs`` epochs, the last one scored (``medrepro.train.task.load_task``).
- ``transfer`` — transfer learning: ``hica.baselines.transfer`` (a ResNet) fine-tuned the same way from pretrained
  weights: the hub's ImageNet weights (``transfer_source: given``, paper profile) or, offline, weights pretrained
  by stage ``cnn_pretrain`` on the disjoint synthetic pool the EI towers are pretrained on (``synthetic``).
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrepro import layout
from medrepro.config import Config
from medrepro.data.loaders import DEFAULT_MEAN, DEFAULT_STD
from medrepro.devices import peak_mem_mb, resolve_device, seed_everything
from medrepro.errors import ParamsError, WeightsError
from medrepro.hica.data import attach_captions
from medrepro.hica.methods import TRANSFER, UNLABELLED, ZEROSHOT
from medrepro.hica.runs import hica_inputs
from medrepro.io import write_json
from medrepro.models.hica import CAPTION
from medrepro.models.hica_losses import clip_loss
from medrepro.models.timm_factory import create_timm_model
from medrepro.train.artifacts import finish_run
from medrepro.train.classify import evaluate
from medrepro.train.downstream import downstream_run
from medrepro.train.loop import FitPlan, fingerprint, run_epochs
from medrepro.train.runner import RunEnv, predictions_frame, run_stage, stage_header, write_outputs
from medrepro.train.vfm import pretrain_synthetic


def zeroshot_seed(cfg: Config, dataset: str, seed: int, env: RunEnv) -> tuple[dict[str, Any], pd.DataFrame]:
    """Align the projection heads on unlabelled (image, caption) pairs; classify the test split by templates."""
    t0 = time.perf_counter()
    z = cfg.hica.zeroshot
    data, names, desc, build = hica_inputs(cfg, dataset, "ratio_1.0", seed, stage1=False)
    data, _, _, sentences = attach_captions(data, dataset, names, build.text_tower)
    gen = seed_everything(seed)
    model = build.model(sentences[:len(names)])  # class descriptors: the name templates only
    model.towers.requires_grad_(False)
    model.to(env.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=z["lr"], weight_decay=0.0)
    steps = max(1, len(data.train_idx) // z["batch_size"])
    epochs = 0 if desc.get("clip") else z["epochs"]  # CLIP towers: CLIP's own projections, no alignment
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs * steps, 1))
    tau = model.loss_cfg.tau

    def loss_fn(idx: np.ndarray, g: torch.Generator) -> torch.Tensor:
        batch = data.inputs(idx, env.device, True, g, cfg.hica.train.augment)
        return clip_loss(model.embed_images(batch), model.embed_text(batch[CAPTION]), tau)

    paths = layout.hica(dataset, ZEROSHOT, UNLABELLED)
    run_desc = {**desc, "method": ZEROSHOT, "subset": UNLABELLED, "zeroshot": dict(z)}
    plan = FitPlan(batch_size=z["batch_size"], steps_per_epoch=steps, max_epochs=epochs, patience=epochs + 1)
    fit = run_epochs(model, loss_fn, None, data.train_idx, plan, opt, sched, gen, env.device, env.precision,
                     paths.checkpoint(seed), fingerprint(run_desc), f"{dataset}/zeroshot/seed{seed}")
    t_test = time.perf_counter()
    test, test_pc, probs = evaluate(model, data, data.test_idx, env.device, env.precision)
    t_test = time.perf_counter() - t_test
    finish_run(paths.weights(seed), model.state_dict(), {**run_desc, "selection": {"epochs_run": fit.epochs_run}},
               paths.checkpoint(seed))
    facts = {"seed": seed, "n_real": 0, "n_synthetic": 0, "trainable_params": sum(p.numel() for p in params)}
    record = {**facts, "test": test, "test_per_class": test_pc, "history": fit.history,
              "samples_per_s": fit.samples_per_s, "train_s": fit.train_s, "epochs_run": fit.epochs_run,
              "inference_images_per_s": len(data.test_idx) / max(t_test, 1e-9),
              "peak_mem_mb": peak_mem_mb(env.device),
              "wall_s": time.perf_counter() - t0, "n_unlabelled_pairs": int(len(data.train_idx))}
    return record, predictions_frame(data, data.test_idx, probs, names, facts)


def run_zeroshot(cfg: Config, dataset: str) -> dict[str, Any]:
    """The zero-shot baseline for every seed (one run serves every K)."""
    env = RunEnv.from_config(cfg)
    paths = layout.hica(dataset, ZEROSHOT, UNLABELLED)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    results = [zeroshot_seed(cfg, dataset, s, env) for s in cfg.seeds]
    record = {**stage_header(dataset, method=ZEROSHOT, subset=UNLABELLED), "runs": [r for r, _ in results]}
    write_outputs(paths, record, pd.concat([p for _, p in results], ignore_index=True))
    return record


def transfer_weights(cfg: Config) -> Path:
    """The transfer baseline's pretrained weights file (stage ``cnn_pretrain``)."""
    method = cfg.hica.baselines["transfer"]
    return layout.cnn_pretrain(method).models / f"{method}.safetensors"


def transfer_model(cfg: Config) -> dict[str, Any]:
    """The transfer baseline's model block: the ``downstream.models`` entry with its pretrained weights."""
    block = cfg.downstream.models[cfg.hica.baselines["transfer"]].as_dict()
    if cfg.hica.baselines["transfer_source"] == "given":
        return block
    weights = transfer_weights(cfg)
    if not weights.is_file():
        raise WeightsError(f"transfer-learning weights not found: {weights} (run the cnn_pretrain stage)")
    return {**block, "pretrained": True, "weights": str(weights)}


def run_supervised(cfg: Config, dataset: str, kind: str, subset: str) -> dict[str, Any]:
    """The supervised CNN (``cnn``) or the transfer-learning ResNet (``transfer``) on ``subset``, every seed."""
    method = cfg.hica.baselines[kind]
    if kind == TRANSFER:
        model = transfer_model(cfg)
    else:  # the supervised CNN starts from a random initialisation, whatever downstream.models says
        model = {**cfg.downstream.models[method].as_dict(), "pretrained": False, "weights": None}
    paths = layout.hica(dataset, kind, subset)
    return run_stage(paths, stage_header(dataset, method=kind, subset=subset, model=method),
                     partial(_supervised_seed, cfg, dataset, method, subset, paths, model), cfg.seeds,
                     RunEnv.from_config(cfg))


def _supervised_seed(cfg: Config, dataset: str, method: str, subset: str, paths: layout.RunPaths,
                     model: dict[str, Any] | None, seed: int):
    return downstream_run(cfg, dataset, method, "real", None, seed, paths=paths, subset=subset, model=model)


def make_cnn_pretrain(cfg: Config) -> dict[str, Any]:
    """Stage cnn_pretrain: the transfer baseline's CNN pretrained like the EI towers, on the disjoint synthetic
    pool (``ei.vfm_pretrain``); weights without a head, and the stage metrics."""
    method = cfg.hica.baselines["transfer"]
    block = cfg.downstream.models[method].as_dict()
    paths, device, pre = layout.cnn_pretrain(method), resolve_device(cfg.device), cfg.ei.vfm_pretrain
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    seed_everything(pre.seed)  # the random initialisation depends on the pool's seed only
    backbone = create_timm_model({**block, "pretrained": False, "weights": None}, 0, pre.image_size)
    coupling = cfg.dataset_options("synth_mm")["coupling"]
    with tempfile.TemporaryDirectory() as tmp:
        backbone, metrics = pretrain_synthetic(cfg.ei.vfm, pre, coupling, device, cfg.precision, Path(tmp),
                                               paths.checkpoint(pre.seed), backbone=backbone,
                                               norm=(DEFAULT_MEAN, DEFAULT_STD))
    finish_run(transfer_weights(cfg), backbone.state_dict(),
               {"builder": "timm", "model": block, "source": "synthetic", "pretrain": vars(pre),
                "coupling": coupling}, paths.checkpoint(pre.seed))
    write_json(paths.metrics, metrics)
    return metrics


def run_hica_baseline(cfg: Config, dataset: str, method: str, subset: str | None) -> dict[str, Any]:
    """``zeroshot`` (no subset), or ``cnn`` / ``transfer`` on ``subset``."""
    if method == ZEROSHOT:
        return run_zeroshot(cfg, dataset)
    if subset is None:
        raise ParamsError(f"HiCA baseline {method!r} needs --subset")
    return run_supervised(cfg, dataset, method, subset)
