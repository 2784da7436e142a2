"""Stage preadapt: unimodal PEFT per modality — MoR pre-adaptation on a real-ratio subset (EI Sec. 4.1), or with
``--method`` the Table 7 comparison on the whole train split (paths: medrepro.layout.preadapt / peft)."""

from __future__ import annotations

from medrepro import layout
from medrepro.ei.peft import run_unimodal
from medrepro.errors import ParamsError
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", default=None, help="a Table 7 PEFT method (default: ei.adapter, pre-adaptation)")
        p.add_argument("--ratio", type=float, default=layout.FULL)

    def body(args, cfg):
        if args.method is None:
            run_unimodal(cfg, args.dataset, cfg.ei.adapter, args.ratio, layout.preadapt(args.dataset, cfg.ei.adapter,
                                                                                         args.ratio))
        elif args.ratio != layout.FULL:
            raise ParamsError(f"preadapt: --method runs (EI Table 7) use the whole train split; --ratio {args.ratio} "
                              "is only for pre-adaptation with ei.adapter")
        else:
            run_unimodal(cfg, args.dataset, args.method, layout.FULL, layout.peft(args.dataset, args.method))

    run_stage("preadapt", add, body)


if __name__ == "__main__":
    main()
