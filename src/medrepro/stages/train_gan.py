"""Stage train_gan: the StyleGAN2-style baseline generators of one dataset, one per (seed, modality)
(paths: medrepro.layout.generator(dataset, "gan", diffusion.train_subset))."""

from __future__ import annotations

from medrepro.stages._cli import run_stage
from medrepro.vap.gan_runs import run_train_gan


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    run_stage("train_gan", add, lambda args, cfg: run_train_gan(cfg, args.dataset))


if __name__ == "__main__":
    main()
