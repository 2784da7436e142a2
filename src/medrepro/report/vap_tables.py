"""VAP-Diffusion Tables 1-2 (``vap_table1.csv``: train bank, ``vap_table2.csv``: unseen bank) and ``vap_gaps.csv``
from every dataset's ``vap_eval`` rows (``medrepro.vap.evaluate``)."""

from __future__ import annotations

import pandas as pd

from medrepro import layout
from medrepro.config import Config
from medrepro.report.table3 import write_table


def run_vap_tables(cfg: Config) -> None:
    """vap_table1.csv (train bank), vap_table2.csv (unseen bank) and vap_gaps.csv from every dataset's rows."""
    rows = pd.concat([pd.read_parquet(layout.generation_eval(d)[0]) for d in cfg.datasets], ignore_index=True)
    gaps = pd.concat([pd.read_parquet(layout.generation_eval(d)[1]) for d in cfg.datasets], ignore_index=True)
    rows = rows.drop(columns=["peak_mem_mb", "wall_s"])
    write_table(rows[rows["bank"] == "train"].drop(columns="bank").reset_index(drop=True), layout.vap_table(1))
    write_table(rows[rows["bank"] == "unseen"].drop(columns="bank").reset_index(drop=True), layout.vap_table(2))
    write_table(gaps.drop(columns=["peak_mem_mb", "wall_s"]), layout.VAP_GAPS)
