"""Stage table3: results/table3.csv, table3.md, plots/table3.png and metrics/summary.json."""

from __future__ import annotations

from pathlib import Path

from medrepro.io import atomic_path, write_json
from medrepro.report.table3 import collect_rows, load_records, plot, render_markdown, summary
from medrepro.stages._cli import log, run_stage


def downstream_paths(params) -> list[Path]:
    """The downstream and EI metrics files the current params call for (same names as in dvc.yaml)."""
    ds, ratios = params["downstream"], params["splits"]["ratios"]
    paths = [Path(f"results/metrics/downstream/{d}/{m}/{t}/ratio_{r}.json")
             for d in params["datasets"] for m in ds["methods"] for t in ds["train_data"] for r in ratios]
    return paths + [Path(f"results/metrics/ei/{d}/ei/real/ratio_{r}.json") for d in params["ei"]["datasets"]
                    for r in ratios]


def main() -> None:
    def add(p):
        p.add_argument("--out", default="results")

    def body(args, params):
        out = Path(args.out)
        df = collect_rows(load_records(downstream_paths(params)))
        metric = params["report"]["headline_metric"]
        with atomic_path(out / "table3.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.6f")
        with atomic_path(out / "table3.md") as tmp:
            tmp.write_text(render_markdown(df))
        (out / "plots").mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "plots" / "table3.png") as tmp:
            plot(df, tmp, metric)
        write_json(out / "metrics" / "summary.json", summary(df, metric))
        log.info("table3: %d rows", len(df))

    run_stage("table3", add, body)


if __name__ == "__main__":
    main()
