"""Stage vap_eval (``--dataset``): every generator's images against the test split (VAP-Diffusion Tables 1-2: FD,
IS, precision, recall; with CAS, real_acc, CAS_ratio and prompt adherence, ``medrepro.diffusion.evaluate``); and
stage vap_tables (no ``--dataset``): the tables and paired intervals of every dataset (paths: medrepro.layout)."""

from __future__ import annotations

from medrepro.diffusion.evaluate import run_vap_eval, run_vap_tables
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", default=None, help="evaluate this dataset's generators (vap_eval)")

    def body(args, cfg):
        if args.dataset:
            run_vap_eval(cfg, args.dataset)
        else:
            run_vap_tables(cfg)

    run_stage("vap_tables", add, body)


if __name__ == "__main__":
    main()
