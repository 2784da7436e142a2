"""Stage preadapt: unimodal PEFT (MoR by default) per modality on one real-ratio subset (EI Sec. 4.1)."""

from __future__ import annotations

from pathlib import Path

from medrepro.io import write_json
from medrepro.stages._cli import run_stage
from medrepro.train.peft import run_unimodal


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", default=None, help="PEFT method (default: ei.adapter)")
        p.add_argument("--ratio", type=float, required=True)
        p.add_argument("--models", required=True, help="folder for the trainable states per seed and modality")
        p.add_argument("--metrics", required=True, help="metrics JSON to write")
        p.add_argument("--vfm", default="models/vfm/vfm.safetensors", help="image-tower weights (vfm stage)")

    def body(args, params):
        models = Path(args.models)
        record = run_unimodal(params, args.dataset, args.method or params["ei"]["adapter"], args.ratio, models,
                              Path(args.vfm), ckpt_dir=Path("models/checkpoints") / models)
        write_json(args.metrics, record)

    run_stage("preadapt", add, body)


if __name__ == "__main__":
    main()
