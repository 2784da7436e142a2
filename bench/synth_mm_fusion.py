"""Measure how much synth_mm needs fusion: the downstream classifier on each modality alone vs both.

Usage (after `make run` has prepared data/): python bench/synth_mm_fusion.py [--method densenet121] [--ratio 1.0]
Prints test metrics per modality set (seed: the first of params.yaml's seeds); weights go to a scratch folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from medrepro.config import load_config
from medrepro.layout import RunPaths
from medrepro.train.downstream import downstream_run
from medrepro.train.runner import RunEnv, train_seed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="densenet121")
    parser.add_argument("--ratio", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config()
    with TemporaryDirectory() as tmp:
        for mods in (["fundus"], ["oct"], ["fundus", "oct"]):
            t0 = time.perf_counter()
            scratch = Path(tmp) / "+".join(mods)
            paths = RunPaths(scratch, scratch / "m.json", scratch / "p.parquet", scratch / "ckpt")
            run = downstream_run(cfg, "synth_mm", args.method, "real", args.ratio, cfg.seeds[0], mods, paths)
            record, _ = train_seed(run, RunEnv.from_config(cfg))
            print(f"{'+'.join(mods):12s} " + " ".join(f"{k}={v:.3f}" for k, v in record["test"].items())
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
