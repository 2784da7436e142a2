"""Stage train_ei: EI (or a Table 3 fusion baseline with --method) on one real-ratio subset."""

from __future__ import annotations

from pathlib import Path

from medrepro.io import write_json
from medrepro.stages._cli import run_stage
from medrepro.train.ablations import with_ablation
from medrepro.train.multimodal import run_multimodal


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", default="ei", help="ei or a key of ei.baselines")
        p.add_argument("--adapter", default=None, help="PEFT inside EI (default: ei.adapter; Table 8 varies it)")
        p.add_argument("--ratio", type=float, required=True)
        p.add_argument("--ablation", default=None,
                       help="one EI knob changed, e.g. int_layer-2 or lambda_aa-0.0 (Tables 4, 6)")
        p.add_argument("--preadapt", required=True, help="folder of the pre-adapted states (preadapt stage)")
        p.add_argument("--preadapt-metrics", required=True)
        p.add_argument("--vfm", default="models/vfm/vfm.safetensors")
        p.add_argument("--models", required=True)
        p.add_argument("--metrics", required=True)

    def body(args, params):
        models = Path(args.models)
        record = run_multimodal(with_ablation(params, args.ablation), args.dataset, args.method, args.ratio, models,
                                Path(args.preadapt), Path(args.preadapt_metrics), Path(args.vfm),
                                ckpt_dir=Path("models/checkpoints") / models, adapter=args.adapter)
        if args.ablation:
            record["ablation"] = args.ablation
        write_json(args.metrics, record)

    run_stage("train_ei", add, body)


if __name__ == "__main__":
    main()
