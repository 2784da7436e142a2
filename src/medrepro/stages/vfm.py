"""Stage vfm: the EI image-tower weights (hub/file in the paper profile, synthetic pretraining when embedded)."""

from __future__ import annotations

from medrepro.stages._cli import run_stage
from medrepro.train.vfm import make_vfm


def main() -> None:
    run_stage("vfm", lambda p: None, lambda args, cfg: make_vfm(cfg))


if __name__ == "__main__":
    main()
