"""Sampling with classifier-free guidance through a diffusers sampler (upstream: DPM-Solver++, 50 steps)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from medrepro.config import NoiseConfig, SampleConfig
from medrepro.devices import autocast
from medrepro.models.uvit import UViT
from medrepro.progress import progress_disabled
from medrepro.vap.conditions import Conditions
from medrepro.vap.schedulers import sampler


def guided_eps(net: UViT, x: torch.Tensor, t: torch.Tensor, cond: tuple, uncond: tuple,
               scale: float) -> torch.Tensor:
    """ε̂ = ε(uncond) + s·(ε(cond) − ε(uncond)) (Ho & Salimans 2022); s = 1 is the conditional prediction.
    (Upstream writes cond + w·(cond − uncond): its w = 1.0 is s = 2.0 here.) Both halves in one batch. For a v or
    x_0 denoiser the same combination of its outputs is the same guidance (at fixed x_t each is affine in ε)."""
    labels, ctx, mask = cond
    null_labels, null_ctx, null_mask = uncond
    both_ctx = None if ctx is None else torch.cat([ctx, null_ctx])
    both_mask = None if mask is None else torch.cat([mask, null_mask])
    eps, _ = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null_labels]), both_ctx, both_mask)
    eps_c, eps_u = eps.float().chunk(2)
    return eps_u + scale * (eps_c - eps_u)


@torch.no_grad()
def sample(net: UViT, noise: NoiseConfig, cfg: SampleConfig, shape: tuple[int, int, int], conds: Conditions,
           idx: torch.Tensor, gen: torch.Generator, device: torch.device, precision: str = "auto",
           desc: str = "sample", pixel_space: bool = True) -> torch.Tensor:
    """Samples (len(idx), *shape) in the model's space for the condition rows ``idx`` of ``conds``, batch by
    batch; the initial noise comes from ``gen`` (the same seed gives the same images). ``cfg.thresholding``
    applies in pixel space only (a latent is no image)."""
    net.eval()
    out = []
    batches = list(torch.split(idx, cfg.batch_size))
    for rows in tqdm(batches, desc=desc, disable=progress_disabled()):
        s = sampler(noise, cfg.sampler, cfg.steps, cfg.thresholding and pixel_space)
        x = (torch.randn((len(rows), *shape), generator=gen) * s.init_noise_sigma).to(device)
        cond = conds.batch(rows, None, device)
        uncond = conds.null(len(rows), device)
        for t in s.timesteps:
            tt = torch.full((len(rows),), int(t), device=device, dtype=torch.long)
            with autocast(device, precision):
                eps = guided_eps(net, x, tt, cond, uncond, cfg.guidance_scale)
            x = s.step(eps, t, x).prev_sample
        out.append(x.float().cpu())
    return torch.cat(out)
