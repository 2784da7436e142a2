"""Stage train_hica: HiCA stage 2 on one labelled subset (shot_K or ratio_r) of a dataset, every seed; with
``--ablation`` one term of Eq. 2 removed (Table II), ``unseen`` classes held out (Table IV) or noisy descriptors
(Table V). Paths: medrepro.layout.hica."""

from __future__ import annotations

from medrepro.hica.methods import UNSEEN, VARIANTS
from medrepro.hica.runs import run_train_hica
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--subset", required=True, help="a labelled subset: shot_K or ratio_r (hica.subsets)")
        p.add_argument("--ablation", default=None, choices=list(VARIANTS),
                       help=f"a Table II ablation, {UNSEEN} (Table IV: hica.unseen.classes held out) or "
                            "noise_<kind> (Table V: hica.noise)")

    run_stage("train_hica", add, lambda args, cfg: run_train_hica(cfg, args.dataset, args.subset, args.ablation))


if __name__ == "__main__":
    main()
