"""Stages ei_colocated, ei_independent, vap3 and hica3 (``--name colocated`` / ``independent`` / ``vap3`` /
``hica3``): a named experiment run in its own project folder,
then its tables (medrepro.experiments)."""

from __future__ import annotations

from medrepro.experiments import EXPERIMENTS, get_experiment, run_experiment
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--name", required=True, choices=sorted(EXPERIMENTS))
        p.add_argument("--dry-run", action="store_true", help="show the experiment's jobs, run nothing")

    def body(args, cfg):
        cores = args.threads or cfg.threads
        for table, path in run_experiment(get_experiment(args.name), cores, dry_run=args.dry_run).items():
            log.info("experiment %s: %s → %s", args.name, table.name, path)

    run_stage("experiment", add, body)


if __name__ == "__main__":
    main()
