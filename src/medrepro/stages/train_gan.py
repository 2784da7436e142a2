"""Stage train_gan: the StyleGAN2-style baseline generators of one dataset, one per (seed, modality)
(paths: medrepro.layout.generator(dataset, "gan", diffusion.train_subset))."""

from __future__ import annotations

from medrepro.diffusion.gan_runs import run_train_gan
from medrepro.stages._cli import run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    run_stage("train_gan", add, lambda args, cfg: run_train_gan(cfg, args.dataset))


if __name__ == "__main__":
    main()
