"""Measure how much synth_mm needs fusion: the downstream classifier on each modality alone vs both.

Usage (after `make run` has prepared data/): python bench/synth_mm_fusion.py [--method densenet121] [--ratio 1.0]
Prints test metrics per modality set; README's "synth_mm" numbers come from this script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from medrepro.params import load_params
from medrepro.train.downstream import run_downstream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="densenet121")
    parser.add_argument("--ratio", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params()
    with TemporaryDirectory() as tmp:
        for mods in (["fundus"], ["oct"], ["fundus", "oct"]):
            t0 = time.perf_counter()
            rec = run_downstream(params, "synth_mm", args.method, "real", args.ratio, Path(tmp), modalities=mods)
            test = rec["runs"][0]["test"]
            print(f"{'+'.join(mods):12s} " + " ".join(f"{k}={v:.3f}" for k, v in test.items())
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
