"""Stage vfm: the EI image-tower weights (hub/file in the paper profile, synthetic pretraining when embedded)."""

from __future__ import annotations

from pathlib import Path

from medrepro.io import write_json
from medrepro.stages._cli import run_stage
from medrepro.train.vfm import make_vfm


def main() -> None:
    def add(p):
        p.add_argument("--out", default="models/vfm/vfm.safetensors")
        p.add_argument("--metrics", default="results/metrics/vfm.json")

    def body(args, params):
        write_json(args.metrics, make_vfm(params, Path(args.out)))

    run_stage("vfm", add, body)


if __name__ == "__main__":
    main()
