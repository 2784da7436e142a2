"""Stage table3: results/table3.csv, table3.md, plots/table3.png and metrics/summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medrepro import layout
from medrepro.config import Config
from medrepro.data.splits import ratio_column
from medrepro.hica.methods import METHOD
from medrepro.io import atomic_path, write_json
from medrepro.report.scores import scored_record
from medrepro.report.software import software_versions
from medrepro.report.table3 import collect_rows, plot, render_markdown, summary, synthetic_gaps, write_table
from medrepro.stages._cli import log, run_stage


def table3_inputs(cfg: Config) -> list[tuple[dict[str, Any], Path]]:
    """(row identity, predictions file) of every run table3 reports: the downstream methods and EI, each on real
    data at every ratio of ``splits.ratios`` and on real + each generator's synthetic set (``synthesis.generators``)
    at every ratio of ``synthesis.ratios``, and HiCA on real data."""
    ds, ratios = cfg.downstream, cfg.splits.ratios
    cells = [(layout.train_data_of(None), r) for r in ratios]
    cells += [(layout.train_data_of(g), r) for g in cfg.synthesis.generators for r in cfg.synthesis.ratios]
    runs = [({"dataset": d, "method": m, "train_data": t, "real_ratio": r}, layout.downstream(d, m, t, r).predictions)
            for d in cfg.datasets for m in ds.methods for t, r in cells]
    runs += [({"dataset": d, "method": "ei", "train_data": t, "real_ratio": r}, layout.ei(d, r, t).predictions)
             for d in cfg.ei.datasets for t, r in cells]
    return runs + [({"dataset": d, "method": METHOD, "train_data": "real", "real_ratio": r},
                    layout.hica(d, METHOD, ratio_column(r)).predictions) for d in cfg.hica.datasets for r in ratios]


def main() -> None:
    def body(args, cfg):
        inputs, metric = table3_inputs(cfg), cfg.report.headline_metric
        records = [scored_record(path, cfg.report.n_boot, **identity) for identity, path in inputs]
        df = collect_rows(records)
        write_table(df, layout.TABLE3)
        write_table(synthetic_gaps(inputs, metric, cfg.seeds, cfg.report.n_boot), layout.TABLE3_GAPS)
        write_table(software_versions(), layout.SOFTWARE)
        with atomic_path(layout.TABLE3_MD) as tmp:
            tmp.write_text(render_markdown(df, records))
        with atomic_path(layout.TABLE3_PLOT) as tmp:
            plot(df, tmp, metric)
        write_json(layout.SUMMARY, summary(df, metric))
        log.info("table3: %d rows", len(df))

    run_stage("table3", lambda p: None, body)


if __name__ == "__main__":
    main()
