"""Stage vap_tables: VAP-Diffusion Tables 1-2 and their paired intervals from every dataset's vap_eval rows
(``medrepro.report.vap_tables``; paths: medrepro.layout.vap_table, VAP_GAPS)."""

from __future__ import annotations

from medrepro.report.vap_tables import run_vap_tables
from medrepro.stages._cli import run_stage


def main() -> None:
    run_stage("vap_tables", lambda p: None, lambda args, cfg: run_vap_tables(cfg))


if __name__ == "__main__":
    main()
