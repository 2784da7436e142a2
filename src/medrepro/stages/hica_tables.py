"""Stages hica_table@<n>: results/tables/hica_table1.csv (Table I), hica_table2.csv (Table II), hica_table4.csv
(Table IV, unseen classes) and hica_table6.csv (Table VI, costs) (medrepro.report.hica_tables)."""

from __future__ import annotations

from medrepro import layout
from medrepro.report.hica_tables import table1, table2, table4, table6
from medrepro.report.table3 import write_table
from medrepro.stages._cli import log, run_stage

TABLES = {1: table1, 2: table2, 4: table4, 6: table6}


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
