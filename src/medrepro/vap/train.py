"""Training one generator: ε-prediction (Eq. 2) + α·L_recon (Eq. 3, PCM), condition dropout, EMA, resumable.

Runs in the shared epoch loop (``medrepro.train.loop.run_epochs``): an "epoch" is ``checkpoint_every`` steps, so the
full state (weights, EMA, optimiser, schedule, RNG) is checkpointed every N steps and a killed run resumes to the
same final weights. AdamW with linear warm-up then a constant rate, as U-ViT.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from medrepro.config import DiffusionConfig
from medrepro.errors import ParamsError
from medrepro.models.uvit import UViT
from medrepro.train.loop import FitPlan, FitResult, run_epochs
from medrepro.vap.conditions import Conditions
from medrepro.vap.schedulers import training_scheduler


class GeneratorTraining(nn.Module):
    """The trained denoiser and its EMA copy (both in the state dict, so checkpoints carry the EMA)."""

    checkpoint_keep = ("ema.",)  # frozen to the optimiser, but changed by every step's EMA update

    def __init__(self, net: UViT) -> None:
        super().__init__()
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            e.copy_(b)


def balanced_index(labels: np.ndarray, class_balanced: bool) -> np.ndarray:
    """Indices of one pass: every sample, or (class-balanced, as the authors' training script) each class's samples
    repeated up to the largest class's count."""
    idx = np.arange(len(labels))
    if not class_balanced:
        return idx
    counts = np.bincount(labels)
    target = counts.max()
    parts = [np.resize(idx[labels == k], target) for k in np.flatnonzero(counts)]
    return np.sort(np.concatenate(parts))


def snr_weights(alphas_cumprod: torch.Tensor, gamma: float | None, prediction: str) -> torch.Tensor | None:
    """Min-SNR-γ weights of the loss per timestep (Hang et al. 2023; the same optimum, reached in fewer steps):
    min(SNR_t, γ) / SNR_t for ε, / (SNR_t + 1) for v, and min(SNR_t, γ) for x_0, with SNR_t = ᾱ_t / (1 − ᾱ_t);
    None for ``gamma`` None."""
    if gamma is None:
        return None
    snr = alphas_cumprod.double() / (1.0 - alphas_cumprod.double())
    scale = {"epsilon": snr, "v_prediction": snr + 1.0, "sample": torch.ones_like(snr)}[prediction]
    return (snr.clamp(max=gamma) / scale).float()


def target_of(noise_sched: DDPMScheduler, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the denoiser regresses: ε (Eq. 2), v = √ᾱ_t ε − √(1 − ᾱ_t) x_0, or x_0 itself."""
    prediction = noise_sched.config.prediction_type
    if prediction == "epsilon":
        return eps
    return noise_sched.get_velocity(x0, eps, t) if prediction == "v_prediction" else x0


def train_generator(net: UViT, x0: torch.Tensor, conds: Conditions, cfg: DiffusionConfig, gen: torch.Generator,
                    device: torch.device, precision: str, ckpt, run_id: str,
                    desc: str = "diffusion", compile_net: bool = False) -> tuple[GeneratorTraining, FitResult]:
    """Train ``net`` on ``x0`` (N, C, h, w) — pixels in [-1, 1] or scaled latents — under ``conds``;
    ``compile_net`` (params ``compile``) compiles the denoiser's forward in place, the EMA copy stays eager."""
    tc = cfg.train
    if tc.steps % tc.checkpoint_every:
        raise ParamsError(f"diffusion.train.steps ({tc.steps}) must be a multiple of checkpoint_every "
                          f"({tc.checkpoint_every})")
    model = GeneratorTraining(net).to(device)
    if compile_net:
        model.net.compile()
    noise_sched = training_scheduler(cfg.noise)
    n_steps = noise_sched.config.num_train_timesteps
    opt = torch.optim.AdamW(model.net.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)
    warm = max(tc.warmup_steps, 1)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    labels_np = conds.labels.numpy()
    text = conds.context is not None
    weights = snr_weights(noise_sched.alphas_cumprod, tc.snr_gamma, cfg.noise.prediction)

    def loss_fn(batch: np.ndarray, g: torch.Generator) -> torch.Tensor:
        rows = torch.from_numpy(batch)
        x = x0[rows]
        if tc.hflip:
            flip = torch.rand(len(rows), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        eps = torch.randn(x.shape, generator=g)
        t = torch.randint(0, n_steps, (len(rows),), generator=g)
        drop = torch.rand(len(rows), generator=g) < cfg.p_uncond  # classifier-free guidance: label + text dropped
        xt = noise_sched.add_noise(x, eps, t)  # Eq. 1: X_t = √ᾱ_t X_0 + √(1 − ᾱ_t) ε
        labels, ctx, mask = conds.batch(rows, drop, device)
        pred, recon = model.net(xt.to(device), t.to(device), labels, ctx if text else None, mask if text else None)
        target = target_of(noise_sched, x, eps, t).to(device)
        if weights is None:
            loss = F.mse_loss(pred.float(), target)  # Eq. 2 (for ε)
        else:  # Eq. 2 per sample, Min-SNR-weighted
            per_sample = (pred.float() - target).square().flatten(1).mean(1)
            loss = (weights[t].to(device) * per_sample).mean()
        if recon is not None:
            loss = loss + cfg.pcm_alpha * recon.float()  # Eq. 3: + α L_recon
        return loss

    epochs = tc.steps // tc.checkpoint_every
    plan = FitPlan(batch_size=tc.batch_size, steps_per_epoch=tc.checkpoint_every, max_epochs=epochs,
                   patience=epochs + 1)
    fit = run_epochs(model, loss_fn, None, balanced_index(labels_np, tc.class_balanced), plan, opt, lr_sched, gen,
                     device, precision, ckpt, run_id, desc, after_step=lambda: model.update_ema(tc.ema_decay))
    return model, fit
