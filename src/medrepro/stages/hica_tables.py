"""Stages hica_table@<n> and hica_table6: results/tables/hica_table<n>.csv — Table I (methods), II (loss
ablations), IV (unseen classes), V (noisy descriptors) and VI (costs) (medrepro.report.hica_tables)."""

from __future__ import annotations

from medrepro import layout
from medrepro.report.hica_tables import table1, table2, table4, table5, table6
from medrepro.report.table3 import write_table
from medrepro.stages._cli import log, run_stage

TABLES = {1: table1, 2: table2, 4: table4, 5: table5, 6: table6}


def main() -> None:
    def add(p):
        p.add_argument("--table", type=int, required=True, choices=sorted(TABLES))

    def body(args, cfg):
        df = TABLES[args.table](cfg)
        write_table(df, layout.hica_table(args.table))
        log.info("hica_table%d: %d rows", args.table, len(df))

    run_stage("hica_tables", add, body)


if __name__ == "__main__":
    main()
