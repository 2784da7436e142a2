"""Stage train_ei: EI, a Table 3 fusion baseline (--method), EI with another PEFT inside (--adapter, Table 8) or
with one knob changed (--ablation, Tables 4 and 6), on one real-ratio subset (paths: medrepro.layout.multimodal)."""

from __future__ import annotations

from medrepro import layout
from medrepro.ei.multimodal import run_multimodal
from medrepro.errors import ParamsError
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", default="ei", help="ei or a key of ei.baselines")
        p.add_argument("--adapter", default=None, help="PEFT inside EI (default: ei.adapter; Table 8 varies it)")
        p.add_argument("--ratio", type=float, default=layout.FULL)
        p.add_argument("--train-data", default="real", help="real or real+syn_<generator> (EI itself only)")
        p.add_argument("--ablation", default=None,
                       help="one EI knob changed, e.g. int_layer-2 or lambda_aa-0.0 (Tables 4, 6)")

    def body(args, cfg):
        variants = [f for f, v in (("--method", args.method != "ei"), ("--adapter", args.adapter),
                                   ("--ablation", args.ablation), ("--train-data", args.train_data != "real")) if v]
        if len(variants) > 1:
            raise ParamsError(f"train_ei: {' and '.join(variants)} are separate experiments; give one")
        if variants and variants != ["--train-data"] and args.ratio != layout.FULL:
            raise ParamsError(f"train_ei: {variants[0]} runs use the whole train split (EI Tables 3, 4, 6, 8); "
                              f"--ratio {args.ratio} is only for EI itself")
        run_multimodal(cfg, args.dataset, args.method, args.ratio, args.adapter, args.ablation,
                       train_data=args.train_data)

    run_stage("train_ei", add, body)


if __name__ == "__main__":
    main()
