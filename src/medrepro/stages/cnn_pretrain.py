"""Stage cnn_pretrain: HiCA's transfer-learning CNN (hica.baselines.transfer) pretrained on the disjoint synthetic
pool, as the EI towers are (paths: medrepro.layout.cnn_pretrain)."""

from __future__ import annotations

from medrepro.hica.baselines import make_cnn_pretrain
from medrepro.stages._cli import run_stage

if __name__ == "__main__":
    run_stage("cnn_pretrain", lambda p: None, lambda args, cfg: make_cnn_pretrain(cfg))
