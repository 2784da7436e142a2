"""Stage results_doc: docs/results.md generated from results/table3.csv and results/tables/*.csv (the default
run's tables, and the named experiments' `independent` gaps and `mechanisms`)."""

from __future__ import annotations

from medrepro import layout
from medrepro.io import atomic_path
from medrepro.report.results_page import EI_TABLES, read_tables, render
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def body(args, cfg):
        table3, ei_tables, gaps, experiments = read_tables(EI_TABLES)
        with atomic_path(layout.RESULTS_DOC) as tmp:
            tmp.write_text(render(table3, ei_tables, cfg.report.headline_metric, gaps, experiments))
        log.info("results page: %s", layout.RESULTS_DOC)

    run_stage("results_doc", lambda p: None, body)


if __name__ == "__main__":
    main()
