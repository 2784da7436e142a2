"""Stage downstream: train one classifier per seed on one real-ratio subset (paths: medrepro.layout.downstream)."""

from __future__ import annotations

from medrepro.stages._cli import run_stage
from medrepro.train.downstream import run_downstream


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", required=True, help="a key of downstream.models")
        p.add_argument("--train-data", default="real")
        p.add_argument("--ratio", type=float, required=True)

    def body(args, cfg):
        run_downstream(cfg, args.dataset, args.method, args.train_data, args.ratio)

    run_stage("downstream", add, body)


if __name__ == "__main__":
    main()
