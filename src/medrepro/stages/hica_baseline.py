"""Stage hica_baseline: HiCA Table I's baselines — ``--method zeroshot`` (one run per seed, no labels), or
``--method cnn|transfer --subset shot_K`` (medrepro.hica.baselines; paths: medrepro.layout.hica)."""

from __future__ import annotations

from medrepro.hica.baselines import run_hica_baseline
from medrepro.hica.methods import CNN, TRANSFER, ZEROSHOT
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", required=True, choices=[ZEROSHOT, CNN, TRANSFER])
        p.add_argument("--subset", default=None, help="cnn, transfer: the labelled subset (hica.subsets)")

    run_stage("hica_baseline", add, lambda args, cfg: run_hica_baseline(cfg, args.dataset, args.method, args.subset))


if __name__ == "__main__":
    main()
