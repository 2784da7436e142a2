"""Stage vap_eval: every generator of one dataset against its test split (VAP-Diffusion Tables 1-2: FD, IS,
precision, recall; with CAS, real_acc, CAS_ratio and prompt adherence, ``medrepro.vap.evaluate``; paths:
medrepro.layout.generation_eval)."""

from __future__ import annotations

from medrepro.stages._cli import run_stage
from medrepro.vap.evaluate import run_vap_eval


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    run_stage("vap_eval", add, lambda args, cfg: run_vap_eval(cfg, args.dataset))


if __name__ == "__main__":
    main()
