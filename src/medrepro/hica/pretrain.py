"""HiCA stage 1, domain-specific pretraining (Sec. III-C), on the train split's images and captions, no labels.

- Image towers: features of the frozen tower on every training image of a modality → k-means (``clusters``
  pseudo-labels, the paper's "unsupervised clustering") → the tower and a linear head fine-tuned on them with
  cross-entropy. The head is dropped afterwards.
- Text tower: the paper fine-tunes it "on a corpus of medical text descriptions" without naming the objective.
  Chosen here: unsupervised SimCSE (Gao et al. 2021) on the training images' captions — each caption encoded twice
  with dropout as the only noise, the two views of a caption are positives and the batch's other captions
  negatives (InfoNCE, temperature ``text_temperature``), mean-pooled states as sentence embeddings (the pooling
  all-MiniLM-L6-v2 was trained with). It adapts the embedding geometry to the captions' vocabulary without labels
  or paired images; only the top ``text_layers`` transformer layers train (CPU budget; the rest keeps the
  encoder's general semantics, runs once without dropout and is cached).
Labels are never read: the k-means NMI against them is reported as a diagnostic only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medrepro.config import AugmentConfig
from medrepro.data.loaders import CachedImages
from medrepro.hica.text import mean_pool
from medrepro.train.augment import augment
from medrepro.train.loop import FitPlan, FitResult, run_epochs


@dataclass(frozen=True)
class PretrainConfig:
    """Stage 1's knobs (``hica.pretrain``)."""

    clusters: int = 8
    image_epochs: int = 10
    image_lr: float = 1.0e-4
    batch_size: int = 32
    text_epochs: int = 3
    text_lr: float = 2.0e-5
    text_layers: int = 1
    text_temperature: float = 0.05
    max_tokens: int = 64


#: stage-1 image augmentation: flips and small shifts (as the VFM pretraining)
AUGMENT = AugmentConfig(hflip=True, crop_pad=2, color_jitter=0.0)


def kmeans_labels(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Pseudo-labels: k-means (k-means++, 10 restarts) cluster of every feature row."""
    from sklearn.cluster import KMeans

    if len(features) < k:
        raise ValueError(f"k-means needs at least {k} images, got {len(features)}")
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features).astype(np.int64)


@torch.no_grad()
def tower_features(vit: nn.Module, images: CachedImages, modality: str, rows: np.ndarray, device: torch.device,
                   batch_size: int = 128) -> np.ndarray:
    """Pooled (pre-logits) features of ``modality``'s images at ``rows``."""
    vit.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        x = images.batch(rows[i:i + batch_size])[modality].to(device)
        out.append(vit.forward_head(vit.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out).numpy()


def finetune_on_pseudo_labels(vit: nn.Module, images: CachedImages, modality: str, rows: np.ndarray,
                              pseudo: np.ndarray, cfg: PretrainConfig, gen: torch.Generator, device: torch.device,
                              precision: str, ckpt: Any, run_id: str, desc: str) -> FitResult:
    """Fine-tune ``vit`` (+ a fresh linear head) to predict ``pseudo`` for the images at ``rows``."""
    head = nn.Linear(int(vit.num_features), cfg.clusters)
    model = nn.ModuleDict({"vit": vit, "head": head}).to(device)
    targets = torch.from_numpy(pseudo)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.image_lr, weight_decay=0.05, foreach=True)
    steps = max(1, -(-len(rows) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.image_lr, total_steps=cfg.image_epochs * steps)

    def loss_fn(idx: np.ndarray, g: torch.Generator) -> torch.Tensor:
        x = augment(images.batch(rows[idx], train=True, gen=g)[modality], AUGMENT, g).to(device)
        feats = vit.forward_head(vit.forward_features(x), pre_logits=True)
        return F.cross_entropy(head(feats), targets[torch.from_numpy(idx)].to(device))

    plan = FitPlan(batch_size=cfg.batch_size, steps_per_epoch=steps, max_epochs=cfg.image_epochs,
                   patience=cfg.image_epochs + 1)
    return run_epochs(model, loss_fn, None, np.arange(len(rows)), plan, opt, sched, gen, device, precision, ckpt,
                      run_id, desc)


@torch.no_grad()
def _frozen_states(model: nn.Module, tokenizer: Any, texts: list[str], below: int, max_tokens: int,
                   device: torch.device, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states entering layer ``below`` (eval mode: no dropout) of every text, padded to one length, and
    the masks. Computed once: the frozen layers do not change."""
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=max_tokens, return_tensors="pt")
    model.eval()
    states = []
    for i in range(0, len(texts), batch_size):
        part = {k: v[i:i + batch_size].to(device) for k, v in enc.items()}
        states.append(model(**part, output_hidden_states=True).hidden_states[below].cpu())
    return torch.cat(states), enc["attention_mask"]


def _top_layers(layers: Sequence[nn.Module], h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trainable top layers on cached states (additive −inf mask over padding, as the encoder builds it)."""
    additive = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
    for layer in layers:
        out = layer(h, attention_mask=additive)
        h = out[0] if isinstance(out, tuple) else out
    return h


def simcse_finetune(source: str, texts: Sequence[str], cfg: PretrainConfig, seed: int,
                    device: torch.device) -> tuple[nn.Module, Any, dict[str, Any]]:
    """SimCSE on ``texts`` of the HF encoder at ``source`` (local files only); its top ``text_layers`` train.

    The frozen layers run once (no dropout) and their output is cached; the two views of a caption differ by the
    dropout masks of the trainable layers. Returns the model, its tokenizer and the loss history."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModel.from_pretrained(source, local_files_only=True).to(device)
    model.requires_grad_(False)
    layers = model.encoder.layer
    if not 1 <= cfg.text_layers <= len(layers):
        raise ValueError(f"hica.pretrain.text_layers must be in 1..{len(layers)}, got {cfg.text_layers}")
    top = layers[-cfg.text_layers:]
    texts = list(texts)
    states, masks = _frozen_states(model, tokenizer, texts, len(layers) - cfg.text_layers, cfg.max_tokens, device)
    top.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in top.parameters()], lr=cfg.text_lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # the dropout masks
    top.train()
    history, t0, seen = [], time.perf_counter(), 0
    for _ in range(cfg.text_epochs):
        order, losses = rng.permutation(len(texts)), []
        for i in range(0, len(order), cfg.batch_size):
            idx = torch.from_numpy(order[i:i + cfg.batch_size])
            if len(idx) < 2:
                continue
            h, mask = states[idx].to(device), masks[idx].to(device)
            z1, z2 = (mean_pool(_top_layers(top, h, mask), mask) for _ in range(2))
            logits = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).T / cfg.text_temperature
            loss = F.cross_entropy(logits, torch.arange(len(idx), device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            seen += len(idx)
        history.append(float(np.mean(losses)) if losses else float("nan"))
    model.eval()
    return model, tokenizer, {"loss_history": history, "texts": len(texts),
                              "samples_per_s": seen / max(time.perf_counter() - t0, 1e-9)}
