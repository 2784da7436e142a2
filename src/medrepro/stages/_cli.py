"""Shared plumbing of the stage CLIs: argument parsing, params, logging, one-line error exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from medrepro.config import Config, load_config
from medrepro.errors import MedreproError

log = logging.getLogger("medrepro")


def set_threads(n: int) -> None:
    """torch's CPU threads; a stage that has not imported torch (reports, splits) does not pay its import for it."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:  # read by torch when something imports it later
        os.environ["OMP_NUM_THREADS"] = str(n)


def run_stage(name: str, add_args: Callable[[argparse.ArgumentParser], None],
              body: Callable[[argparse.Namespace, Config], None]) -> None:
    """Parse args, load the checked config, run ``body``; a MedreproError exits 1 with its message only."""
    parser = argparse.ArgumentParser(prog=f"python -m medrepro.stages.{name}")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (Snakemake passes the rule's threads; default: params threads)")
    add_args(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    try:
        cfg = load_config(args.params)
        set_threads(args.threads or cfg.threads)
        body(args, cfg)
    except MedreproError as exc:
        print(f"medrepro {name}: error: {exc}", file=sys.stderr)
        sys.exit(1)


def run_generator_stage(name: str, fn: Callable[..., object], subset: bool = False) -> None:
    """A stage over one (dataset, generator): ``fn(cfg, dataset, variant)`` (+ ``subset=`` with ``subset``)."""

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", required=True)
        p.add_argument("--variant", required=True,
                       help="class | vap_nopcm | vap (synthesize: or gan, or <generator>-<subset> as vap-ratio_0.01)")
        if subset:
            p.add_argument("--subset", default=None,
                           help="real subset the generator trains on (default: diffusion.train_subset)")

    def body(args: argparse.Namespace, cfg: Config) -> object:
        extra = {"subset": args.subset} if subset else {}
        return fn(cfg, args.dataset, args.variant, **extra)

    run_stage(name, add, body)
