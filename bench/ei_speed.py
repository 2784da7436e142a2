"""Time EI training: one epoch of the embedded config, or forward/backward steps of the paper config.

  python bench/ei_speed.py --profile embedded            # one epoch over synth_mm-sized random inputs (32 px)
  python bench/ei_speed.py --profile paper --steps 2     # ViT-B/16 (CLIP arch, random weights) at 448 px, batch 8

Prints samples/s and peak memory. On CUDA the same code path uses bf16 autocast and channels_last
(medrepro.train.devices); weights are random because only throughput is measured.
"""

from __future__ import annotations

import argparse
import time

import torch

from medrepro.config import load_config
from medrepro.models.ei import build_ei
from medrepro.train.devices import autocast, peak_mem_mb, prepare_model, resolve_device
from medrepro.train.schedule import build_optimizer

PAPER_VFM = {"arch": "vit_base_patch16_clip_224", "pretrained": False, "kwargs": {}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=["embedded", "paper"], default="embedded")
    parser.add_argument("--steps", type=int, default=None, help="steps to time (default: one epoch / 2)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="recompute block activations in backward (ViT-B @ 448 × 4 towers needs > 24 GB without)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config()
    device = resolve_device(args.device)
    if args.profile == "embedded":
        synth = cfg.dataset_options("synth_mm")
        vfm, size, batch = cfg.ei.vfm.as_dict(), synth["image_size"], cfg.train.batch_size
        steps = args.steps or synth["n_train"] // batch
    else:
        vfm, size, batch, steps = PAPER_VFM, 448, 8, args.steps or 2
    tower = {**vfm, "pretrained": False, "weights": None, "img_size": size}
    model = build_ei(tower, ["a", "b"], 4, "mor", None, modality_prior=[0.5, 0.6])
    if args.grad_checkpointing:
        for t in [*model.auxiliary.values(), *model.primary.values()]:
            t.vit.set_grad_checkpointing(True)
    model = prepare_model(model, device)
    opt = build_optimizer(model.parameters(), cfg.train)
    gen = torch.Generator().manual_seed(0)
    x = {m: torch.randn(batch, 3, size, size, generator=gen).to(device) for m in ("a", "b")}
    y = torch.randint(0, 4, (batch,), generator=gen).to(device)

    def step() -> None:
        with autocast(device, cfg.precision):
            loss = model.training_loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"{args.profile}: {vfm['arch']} @ {size}px, batch {batch}, {steps} steps on {device} "
          f"({torch.get_num_threads()} threads): {steps * batch / dt:.1f} samples/s, "
          f"{dt / steps:.3f} s/step, peak {peak_mem_mb(device):.0f} MB"
          + (" (gradient checkpointing)" if args.grad_checkpointing else ""))


if __name__ == "__main__":
    main()
