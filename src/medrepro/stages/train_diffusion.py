"""Stage train_diffusion: the VAP-Diffusion generators of one variant on one dataset, one per (seed, modality)
(paths: medrepro.layout.generator)."""

from __future__ import annotations

from medrepro.diffusion.runs import run_train_diffusion
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--variant", required=True, help="class | vap_nopcm | vap")

    def body(args, cfg):
        run_train_diffusion(cfg, args.dataset, args.variant)

    run_stage("train_diffusion", add, body)


if __name__ == "__main__":
    main()
