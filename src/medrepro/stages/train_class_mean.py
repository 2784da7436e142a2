"""Stage train_class_mean: the class-mean baseline "generator" of one dataset, one per (seed, modality)
(paths: medrepro.layout.generator(dataset, "class_mean", diffusion.train_subset))."""

from __future__ import annotations

from medrepro.stages._cli import run_stage
from medrepro.vap.class_mean import run_class_mean


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    run_stage("train_class_mean", add, lambda args, cfg: run_class_mean(cfg, args.dataset))


if __name__ == "__main__":
    main()
