"""One training step and one sampling batch of VAP-Diffusion's paper-size generator, samples/s printed.

The paper profile (the authors' code): U-ViT patch 2, dim 512, depth 16, 8 heads on 4×32×32 SD-VAE latents (256 px),
256 BiomedCLIP token states of width 768 as context, PCM with 2 × 256 prototype tokens, DPM-Solver++ sampling with
classifier-free guidance, then the VAE decoder. Weights are random (timing only); the context is random tensors of
BiomedCLIP's shape, so nothing is downloaded. On CUDA the same code runs under bf16 autocast.

    python bench/diffusion_speed.py [--batch 8] [--sample-batch 4] [--steps 50] [--device auto] [--embedded]
"""

from __future__ import annotations

import argparse
import time

import torch

from medrepro.config import NoiseConfig, SampleConfig
from medrepro.devices import autocast, peak_mem_mb, resolve_device
from medrepro.models.uvit import UViT, UViTConfig
from medrepro.vap.conditions import Conditions
from medrepro.vap.sample import sample
from medrepro.vap.schedulers import training_scheduler

PAPER = UViTConfig(img_size=32, in_chans=4, patch_size=2, dim=512, depth=16, heads=8, num_classes=7,
                   context_dim=768, context_len=256, pcm=True)
EMBEDDED = UViTConfig(img_size=32, in_chans=3, patch_size=4, dim=64, depth=4, heads=4, num_classes=4,
                      context_dim=384, context_len=16, pcm=True, pcm_tokens=32)
NOISE = NoiseConfig(1000, 0.00085, 0.012, "scaled_linear")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sample-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--embedded", action="store_true", help="the embedded generator instead of the paper's")
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = EMBEDDED if args.embedded else PAPER
    net = UViT(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, betas=(0.9, 0.9), weight_decay=0.03)
    sched = training_scheduler(NOISE)
    b, shape = args.batch, (cfg.in_chans, cfg.img_size, cfg.img_size)
    ctx = torch.randn(b, cfg.context_len, cfg.context_dim, device=device)
    mask = torch.ones(b, cfg.context_len, dtype=torch.bool, device=device)
    labels = torch.randint(0, cfg.num_classes, (b,), device=device)
    times = []
    for _ in range(3):  # the first step warms up
        x0 = torch.randn(b, *shape, device=device)
        eps = torch.randn_like(x0)
        t = torch.randint(0, 1000, (b,), device=device)
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, "auto"):
            pred, recon = net(sched.add_noise(x0, eps, t), t, labels, ctx, mask)
            loss = (pred.float() - eps).pow(2).mean() + recon.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    step_s = min(times[1:])
    print(f"{'embedded' if args.embedded else 'paper'} U-ViT ({sum(q.numel() for q in net.parameters()) / 1e6:.1f} M "
          f"params) on {device}: training step of {b} in {step_s:.2f} s = {b / step_s:.1f} samples/s")
    n = args.sample_batch
    conds = Conditions(labels=labels[:1].repeat(n).cpu(), null_class=cfg.num_classes,
                       context=ctx[:1].repeat(n, 1, 1).cpu(), mask=mask[:1].repeat(n, 1).cpu(),
                       null_context=torch.zeros(1, cfg.context_len, cfg.context_dim),
                       null_mask=torch.ones(1, cfg.context_len, dtype=torch.bool))
    scfg = SampleConfig(sampler="dpmsolver++", steps=args.steps, guidance_scale=2.0, batch_size=n)
    _sync(device)
    t0 = time.perf_counter()
    sample(net, NOISE, scfg, shape, conds, torch.arange(n), torch.Generator().manual_seed(0), device)
    _sync(device)
    dt = time.perf_counter() - t0
    print(f"sampling {n} with {args.steps} DPM-Solver++ steps + guidance: {dt:.1f} s = {n / dt:.2f} images/s "
          f"(VAE decoding not included); peak memory {peak_mem_mb(device):.0f} MB")


if __name__ == "__main__":
    main()
