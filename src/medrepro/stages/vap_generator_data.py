"""Stage vap_generator_data: results/tables/vap_generator_data.csv — the downstream gain of synthetic data from a
generator trained on all real training images vs on the same real subset the downstream model sees
(medrepro.report.generator_data)."""

from __future__ import annotations

from medrepro import layout
from medrepro.report.generator_data import generator_data_table
from medrepro.report.table3 import write_table
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def body(args, cfg):
        df = generator_data_table(cfg, cfg.report.n_boot)
        write_table(df, layout.VAP_GENERATOR_DATA)
        log.info("vap_generator_data: %d rows", len(df))

    run_stage("vap_generator_data", lambda p: None, body)


if __name__ == "__main__":
    main()
