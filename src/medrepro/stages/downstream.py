"""Stage downstream: train one classifier per seed on one real-ratio subset; write its metrics JSON."""

from __future__ import annotations

from pathlib import Path

from medrepro.io import write_json
from medrepro.stages._cli import run_stage
from medrepro.train.downstream import run_downstream


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", required=True)
        p.add_argument("--train-data", default="real")
        p.add_argument("--ratio", type=float, required=True)
        p.add_argument("--models", required=True, help="folder for the best weights per seed")
        p.add_argument("--metrics", required=True, help="metrics JSON to write")

    def body(args, params):
        models = Path(args.models)
        record = run_downstream(params, args.dataset, args.method, args.train_data, args.ratio,
                                models_dir=models, ckpt_dir=Path("models/checkpoints") / models)
        write_json(args.metrics, record)

    run_stage("downstream", add, body)


if __name__ == "__main__":
    main()
