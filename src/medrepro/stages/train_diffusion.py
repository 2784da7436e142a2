"""Stage train_diffusion: the VAP-Diffusion generators of one variant on one dataset, one per (seed, modality)
(paths: medrepro.layout.generator)."""

from __future__ import annotations

from medrepro.stages._cli import run_generator_stage
from medrepro.vap.runs import run_train_diffusion

if __name__ == "__main__":
    run_generator_stage("train_diffusion", run_train_diffusion, subset=True)
