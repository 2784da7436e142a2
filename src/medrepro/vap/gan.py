"""Training and sampling of the class-conditional StyleGAN2 baseline (VAP-Diffusion Table 3, "+ synthetic StyleGAN").

StyleGAN2 (Karras et al. 2020) objective: non-saturating logistic loss, lazy R1 on reals (Sec. 3.1 "lazy
regularization"), Adam with β1 = 0, EMA of G (StyleGAN2-ADA half-life in images with ramp-up). Reals are drawn
class-balanced with optional x-flips. The full state (G, D, G_ema, both optimisers, RNG states, step, history) is
checkpointed atomically; rerunning with the same ``run_id`` resumes and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medrepro.devices import autocast, peak_mem_mb, seed_everything
from medrepro.errors import DataError, ParamsError
from medrepro.io import atomic_path
from medrepro.models.stylegan import Discriminator, Generator, StyleGANConfig
from medrepro.progress import progress_disabled

log = logging.getLogger("medrepro")

_CKPT_KEYS = ("run_id", "G", "D", "G_ema", "opt_g", "opt_d", "gen", "torch_rng", "state")


@dataclass(frozen=True)
class GANTrainConfig:
    """Defaults: the embedded profile (32 px on one CPU thread, ≈ 2.5 CPU-minutes). Optimiser, R1 and EMA follow
    StyleGAN2-ADA's auto config (lr 0.0025, β = (0, 0.99), R1 every 16 steps, EMA half-life ramped up over 5 % of the
    images seen); γ = 0.0064 ≈ ADA's 2e-4 · res² / batch at batch 32."""

    steps: int = 480
    batch_size: int = 16
    lr_g: float = 0.0025
    lr_d: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 0.0064
    r1_every: int = 16  # lazy R1 (StyleGAN2 Sec. 3.1): every 16 D steps, weighted ×16
    ema_half_life_images: int = 10_000
    ema_rampup: float | None = 0.05  # EMA half-life ≤ rampup · images seen (StyleGAN2-ADA)
    checkpoint_every: int = 120
    log_every: int = 40
    augment_hflip: bool = False  # StyleGAN2-ADA --mirror default; laterality matters in fundus and chest images
    class_balanced: bool = True
    precision: str = "fp32"  # "auto" → bf16 autocast on CUDA; untested for GAN stability

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "r1_every", "checkpoint_every", "log_every", "ema_half_life_images"):
            if getattr(self, key) < 1:
                raise ParamsError(f"gan.train.{key}: must be ≥ 1, got {getattr(self, key)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gan_train_profile(profile: str) -> GANTrainConfig:
    """``embedded`` (the defaults) or ``paper``: StyleGAN2-ADA's auto config at 256 px, batch 16 (γ = 2e-4 · 256² / 16,
    EMA half-life 5k images) and its default 25 M images; VAP-Diffusion does not state its StyleGAN schedule."""
    if profile == "embedded":
        return GANTrainConfig()
    if profile == "paper":
        return GANTrainConfig(steps=25_000_000 // 16, batch_size=16, r1_gamma=0.8192, ema_half_life_images=5_000,
                              checkpoint_every=5_000, log_every=500, precision="fp32")
    raise ParamsError(f"gan.profile: unknown profile {profile!r} (embedded, paper)")


class _RealSampler:
    """Draws real batches: classes uniformly among those present, then an image of that class (or plain uniform)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, balanced: bool, hflip: bool):
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        self.x = (x / 127.5 - 1.0).to(device)
        self.y = torch.from_numpy(labels.astype(np.int64))
        order = torch.argsort(self.y, stable=True)
        classes, counts = torch.unique(self.y, return_counts=True)
        self.order, self.classes, self.counts = order, classes, counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.balanced, self.hflip, self.device = balanced, hflip, device

    def __call__(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.balanced:
            k = torch.randint(len(self.classes), (n,), generator=gen)
            within = (torch.rand(n, generator=gen) * self.counts[k]).long().clamp_max(self.counts[k] - 1)
            idx = self.order[self.starts[k] + within]
        else:
            idx = torch.randint(len(self.y), (n,), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        x = self.x[idx.to(self.x.device)]
        if self.hflip:
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
        return x, self.y[idx].to(self.device)


def _check_inputs(images: np.ndarray, labels: np.ndarray, num_classes: int, model: StyleGANConfig) -> None:
    if num_classes != model.num_classes:
        raise ParamsError(f"gan: num_classes={num_classes} but gan.model.num_classes={model.num_classes}")
    want = (model.img_size, model.img_size, model.channels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != want:
        raise ParamsError(f"gan: images must be uint8 (N, {want[0]}, {want[1]}, {want[2]}) for gan.model, "
                          f"got {images.dtype} {images.shape}")
    if len(labels) != len(images) or len(images) == 0:
        raise ParamsError(f"gan: {len(images)} images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ParamsError(f"gan: labels outside [0, {num_classes}): {labels.min()}..{labels.max()}")


def _load_checkpoint(ckpt: Path) -> dict[str, Any]:
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and EOF errors all mean the same to the user
        raise DataError(f"{ckpt}: corrupt GAN checkpoint ({type(e).__name__}); delete it to start over") from e
    if not isinstance(saved, dict) or any(k not in saved for k in _CKPT_KEYS):
        raise DataError(f"{ckpt}: not a GAN checkpoint (missing keys); delete it to start over")
    return saved


def _ema_beta(cfg: GANTrainConfig, images_seen: int) -> float:
    """β = 0.5^(batch / half-life), half-life ramped up with the images seen (StyleGAN2-ADA training_loop)."""
    half_life = float(cfg.ema_half_life_images)
    if cfg.ema_rampup is not None:
        half_life = min(half_life, images_seen * cfg.ema_rampup)
    return 0.5 ** (cfg.batch_size / max(half_life, 1e-8))


@torch.no_grad()
def _update_ema(g_ema: Generator, g: Generator, beta: float) -> None:
    for p_ema, p in zip(g_ema.parameters(), g.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(g_ema.buffers(), g.buffers(), strict=True):
        b_ema.copy_(b)


def _step(G: Generator, D: Discriminator, G_ema: Generator, opt_g: torch.optim.Optimizer,
          opt_d: torch.optim.Optimizer, sample_real, step: int, cfg: GANTrainConfig, gen: torch.Generator,
          device: torch.device) -> dict[str, float]:
    """One D update (with lazy R1 every ``r1_every`` steps), one G update, one EMA update; returns loss stats."""
    n, z_dim = cfg.batch_size, G.cfg.z_dim
    real, labels = sample_real(n, gen)
    z = torch.randn(n, z_dim, generator=gen).to(device)
    # D: softplus(D(G(z))) + softplus(-D(x)), the non-saturating logistic loss (Goodfellow et al. 2014)
    G.requires_grad_(False)
    D.requires_grad_(True)
    with autocast(device, cfg.precision):
        fake = G(z, labels)
        d_fake, d_real = D(fake.detach(), labels), D(real, labels)
        loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    stats: dict[str, float] = {}
    if cfg.r1_gamma > 0 and step % cfg.r1_every == 0:
        # R1 (Mescheder et al. 2018) γ/2 · E‖∇_x D(x)‖², as its own D step every r1_every steps, weighted ×r1_every
        real_r1 = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(real_r1, labels).sum(), real_r1, create_graph=True)
        r1 = grad.square().sum(dim=(1, 2, 3)).mean()
        opt_d.zero_grad(set_to_none=True)
        (r1 * (cfg.r1_gamma / 2) * cfg.r1_every).backward()
        opt_d.step()
        stats["r1"] = float(r1.detach())
    # G: softplus(-D(G(z)))
    G.requires_grad_(True)
    D.requires_grad_(False)
    z = torch.randn(n, z_dim, generator=gen).to(device)
    with autocast(device, cfg.precision):
        loss_g = F.softplus(-D(G(z, labels), labels)).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    _update_ema(G_ema, G, _ema_beta(cfg, (step + 1) * n))
    return {**stats, "loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
            "d_real": float(d_real.detach().mean()), "d_fake": float(d_fake.detach().mean())}


def train_gan(images: np.ndarray, labels: np.ndarray, num_classes: int, model: StyleGANConfig,
              cfg: GANTrainConfig, seed: int, device: torch.device, ckpt: Path | None, run_id: str,
              desc: str = "gan") -> tuple[Generator, dict[str, Any]]:
    """Train on uint8 (N, H, W, C) ``images``; return the EMA generator (eval mode) and a run record."""
    _check_inputs(images, labels, num_classes, model)
    gen = seed_everything(seed)
    G, D = Generator(model).to(device), Discriminator(model).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    # Adam; with lazy R1 D makes k + 1 steps per k: lr, β scaled by c = k/(k+1) (StyleGAN2 Sec. 3.1, official code)
    c_d = cfg.r1_every / (cfg.r1_every + 1) if cfg.r1_gamma > 0 else 1.0
    b1, b2 = float(cfg.betas[0]), float(cfg.betas[1])
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(b1, b2), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d * c_d, betas=(b1**c_d, b2**c_d), eps=1e-8)
    state: dict[str, Any] = {"step": 0, "train_s": 0.0, "history": [], "acc": {}, "acc_n": 0}
    resumed = None
    if ckpt is not None and ckpt.exists():
        saved = _load_checkpoint(ckpt)
        if saved["run_id"] == run_id:
            G.load_state_dict(saved["G"])
            D.load_state_dict(saved["D"])
            G_ema.load_state_dict(saved["G_ema"])
            opt_g.load_state_dict(saved["opt_g"])
            opt_d.load_state_dict(saved["opt_d"])
            gen.set_state(saved["gen"])
            torch.set_rng_state(saved["torch_rng"])
            if device.type == "cuda" and saved.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"], device)
            state = saved["state"]
            resumed = state["step"]
            log.info("%s: resumed from step %d (%s)", desc, resumed, ckpt)
        else:
            log.info("%s: ignoring checkpoint of a different run (%s)", desc, ckpt)
    sample_real = _RealSampler(images, labels, device, cfg.class_balanced, cfg.augment_hflip)
    G.train()
    D.train()
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=desc, disable=progress_disabled())
    while state["step"] < cfg.steps:
        t0 = time.perf_counter()
        stats = _step(G, D, G_ema, opt_g, opt_d, sample_real, state["step"], cfg, gen, device)
        state["train_s"] += time.perf_counter() - t0
        state["step"] += 1
        for k, v in stats.items():
            state["acc"][k] = state["acc"].get(k, 0.0) + v
        state["acc"]["r1_n"] = state["acc"].get("r1_n", 0.0) + ("r1" in stats)
        state["acc_n"] += 1
        if state["step"] % cfg.log_every == 0 or state["step"] == cfg.steps:
            state["history"].append(_history_entry(state))
            bar.set_postfix({k: f"{state['history'][-1][k]:.3f}" for k in ("loss_d", "loss_g")})
        bar.update(1)
        if ckpt is not None and (state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.steps):
            _save_checkpoint(ckpt, run_id, G, D, G_ema, opt_g, opt_d, gen, state, device)
    bar.close()
    record = {"steps": state["step"], "images_seen": state["step"] * cfg.batch_size,
              "samples_per_s": state["step"] * cfg.batch_size / max(state["train_s"], 1e-9),
              "steps_per_s": state["step"] / max(state["train_s"], 1e-9), "wall_s": state["train_s"],
              "peak_mem_mb": peak_mem_mb(device), "history": state["history"], "resumed_from": resumed,
              "model": model.as_dict(), "train": cfg.as_dict(), "seed": seed, "run_id": run_id}
    return G_ema.eval(), record


def _history_entry(state: dict[str, Any]) -> dict[str, float]:
    """Means over the steps since the last entry (R1 over the steps that computed it)."""
    acc, n = state["acc"], state["acc_n"]
    entry = {"step": state["step"], **{k: acc.get(k, 0.0) / n for k in ("loss_d", "loss_g", "d_real", "d_fake")}}
    if acc.get("r1_n"):
        entry["r1"] = acc.get("r1", 0.0) / acc["r1_n"]
    state["acc"], state["acc_n"] = {}, 0
    return entry


def _save_checkpoint(ckpt: Path, run_id: str, G, D, G_ema, opt_g, opt_d, gen: torch.Generator,
                     state: dict[str, Any], device: torch.device) -> None:
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    with atomic_path(ckpt) as tmp:
        torch.save({"run_id": run_id, "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "gen": gen.get_state(),
                    "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng, "state": state}, tmp)


@torch.no_grad()
def class_w_avg(generator: Generator, num_samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """Per-class centre of W, (num_classes, w_dim), for the class-conditional truncation trick."""
    device = next(generator.parameters()).device
    z = torch.randn(num_samples, generator.cfg.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    rows = []
    for c in range(generator.cfg.num_classes):
        rows.append(generator.mapping(z, torch.full((num_samples,), c, device=device)).mean(0))
    return torch.stack(rows)


@torch.no_grad()
def sample_gan(generator: Generator, labels: np.ndarray, seed: int, device: torch.device, batch_size: int = 256,
               truncation: float = 1.0) -> np.ndarray:
    """Generate one uint8 (N, H, W, C) image per label; deterministic for a given seed, device and batch size."""
    generator = generator.to(device).eval()
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if len(labels_t) and (labels_t.min() < 0 or labels_t.max() >= generator.cfg.num_classes):
        raise ParamsError(f"sample_gan: labels outside [0, {generator.cfg.num_classes})")
    z_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    w_avg_all = class_w_avg(generator, seed=seed) if truncation != 1.0 else None
    out = []
    for start in range(0, len(labels_t), batch_size):
        y = labels_t[start:start + batch_size].to(device)
        z = torch.randn(len(y), generator.cfg.z_dim, generator=z_gen).to(device)
        w_avg = w_avg_all[y] if w_avg_all is not None else None
        x = generator(z, y, truncation=truncation, w_avg=w_avg, noise_gen=noise_gen)
        out.append(((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
    size, c = generator.cfg.img_size, generator.cfg.channels
    return torch.cat(out).numpy() if out else np.zeros((0, size, size, c), dtype=np.uint8)
