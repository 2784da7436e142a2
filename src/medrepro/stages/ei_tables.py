"""Stage ei_table{3,4,6,7,8}: the EI paper's tables as CSV (results/tables/)."""

from __future__ import annotations

from medrepro import layout
from medrepro.report.ei_tables import TABLES, ei_gaps
from medrepro.report.table3 import write_table
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--table", type=int, choices=sorted(TABLES), required=True)

    def body(args, cfg):
        df = TABLES[args.table](cfg)
        out = layout.ei_table(args.table)
        write_table(df, out)
        if args.table == 3:
            write_table(ei_gaps(cfg), layout.EI_TABLE3_GAPS)
        log.info("EI table %d: %d rows → %s", args.table, len(df), out)

    run_stage("ei_tables", add, body)


if __name__ == "__main__":
    main()
