"""Stage synthesize: paired synthetic samples per class from one variant's generators and the prompt bank
(paths: medrepro.layout.synthetic, synthetic_grid)."""

from __future__ import annotations

from medrepro.diffusion.synthesize import run_synthesize
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--variant", required=True, help="class | vap_nopcm | vap")

    def body(args, cfg):
        run_synthesize(cfg, args.dataset, args.variant)

    run_stage("synthesize", add, body)


if __name__ == "__main__":
    main()
