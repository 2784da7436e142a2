"""Stage synthesize: paired synthetic samples per class from one generator (a VAP-Diffusion variant or the GAN)
and the prompt bank (paths: medrepro.layout.synthetic, synthetic_grid)."""

from __future__ import annotations

from medrepro.stages._cli import run_generator_stage
from medrepro.vap.synthesize import run_synthesize

if __name__ == "__main__":
    run_generator_stage("synthesize", run_synthesize)
