"""Stage hica_pretrain: HiCA stage 1 (domain pretraining without labels) of one dataset, every seed
(paths: medrepro.layout.hica_pretrain)."""

from __future__ import annotations

from medrepro.hica.pretrain_runs import run_hica_pretrain
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    run_stage("hica_pretrain", add, lambda args, cfg: run_hica_pretrain(cfg, args.dataset))


if __name__ == "__main__":
    main()
