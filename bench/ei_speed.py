"""EI training speed: FLOPs per sample, samples/s, MFU and peak memory, per PEFT method and batch size.

  python bench/ei_speed.py --profile embedded                              # synth_mm-sized inputs (32 px)
  python bench/ei_speed.py --profile paper --batch 8 32 --peft mor lora linear_probe --steps 10 [--compile]
  python bench/ei_speed.py --profile paper --batch 8 --steps 2 --peak-tflops 790   # MFU against a given peak

FLOPs of one training step (forward + backward of ``training_loss``, EI Eq. 8) are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions); MFU = achieved FLOP/s over the
device's dense bf16 peak, looked up for known GPUs or given with ``--peak-tflops``. The paper profile is EI's
paper config: M = 2 modalities, four ViT-B/16 towers (CLIP architecture, random weights: only speed is measured)
at 448 px, bf16 autocast and channels_last on CUDA (``medrepro.devices``, the training stages' code path).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medrepro.config import load_config
from medrepro.devices import autocast, peak_mem_mb, prepare_model, resolve_device
from medrepro.models.ei import build_ei
from medrepro.train.schedule import build_optimizer

PAPER_VFM = {"arch": "vit_base_patch16_clip_224", "pretrained": False, "kwargs": {}}
#: dense bf16 peak TFLOP/s by device name fragment (vendor data sheets, without sparsity)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0, "4090": 165.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def build(profile: str, peft: str, cfg, device: torch.device, compile_model: bool,
          grad_checkpointing: bool) -> tuple[torch.nn.Module, int]:
    if profile == "embedded":
        vfm, size = cfg.ei.vfm.as_dict(), cfg.dataset_options("synth_mm")["image_size"]
    else:
        vfm, size = PAPER_VFM, 448
    tower = {**vfm, "pretrained": False, "weights": None, "img_size": size}
    model = build_ei(tower, ["a", "b"], 4, peft, None, modality_prior=[0.5, 0.6])
    if grad_checkpointing:
        for t in [*model.auxiliary.values(), *model.primary.values()]:
            t.vit.set_grad_checkpointing(True)
    return prepare_model(model, device, compile_model), size


def measure(model: torch.nn.Module, size: int, batch: int, steps: int, cfg, device: torch.device) -> dict:
    """FLOPs of one step (counted), then ``steps`` timed steps after two warm-up steps."""
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

    for _ in range(2):
        step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"flops_per_sample": counter.get_total_flops() / batch, "samples_per_s": steps * batch / dt,
            "s_per_step": dt / steps, "peak_mem_mb": peak_mem_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=["embedded", "paper"], default="embedded")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: params' one)")
    parser.add_argument("--peft", nargs="+", default=["mor"], help="PEFT methods of the towers (default: mor)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--compile", action="store_true", help="params `compile: true` (torch.compile)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: lookup)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="recompute block activations in backward (ViT-B @ 448 × 4 towers needs > 24 GB without)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config()
    device = resolve_device(args.device)
    peak = peak_tflops(device, args.peak_tflops)
    print(f"{args.profile} on {device} ({torch.get_num_threads()} threads), precision {cfg.precision}, "
          f"compile {args.compile}, peak {peak or '?'} TFLOP/s")
    print(f"{'peft':<14}{'batch':>6}{'GFLOP/sample':>14}{'samples/s':>11}{'MFU':>8}{'peak MB':>10}")
    for peft in args.peft:
        for batch in args.batch or [cfg.train.batch_size]:
            model, size = build(args.profile, peft, cfg, device, args.compile, args.grad_checkpointing)
            r = measure(model, size, batch, args.steps, cfg, device)
            mfu = r["flops_per_sample"] * r["samples_per_s"] / (peak * 1e12) if peak else float("nan")
            print(f"{peft:<14}{batch:>6}{r['flops_per_sample'] / 1e9:>14.2f}{r['samples_per_s']:>11.1f}"
                  f"{mfu:>8.1%}{r['peak_mem_mb']:>10.0f}")
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
