"""results/table3.csv and its renderings: test scores per (dataset, method, train_data, real_ratio, seed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medrepro.metrics.classification import METRICS as HEADLINE_METRICS
from medrepro.report.paired import VALUE_COLUMNS, paired_rows

METRICS = list(HEADLINE_METRICS)
#: table3's columns, then each metric's 95 % bootstrap interval over test samples
COLUMNS = ["dataset", "method", "train_data", "real_ratio", "seed", "n_real", "n_synthetic", *METRICS,
           *(f"{m}_{end}" for m in METRICS for end in ("ci_low", "ci_high"))]
KEYS = ["dataset", "method", "train_data", "real_ratio"]


def write_table(df: pd.DataFrame, path: Path) -> None:
    """A result table as CSV, written atomically; floats with 6 decimals (every table uses this format)."""
    from medrepro.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")


def collect_rows(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per seed of every scored record (``report.scores.scored_record`` with resamples), in the table3
    column order."""
    rows = []
    for rec in records:
        for run in rec["runs"]:
            rows.append({**{k: rec[k] for k in KEYS}, "seed": run["seed"], "n_real": run["n_real"],
                         "n_synthetic": run["n_synthetic"], **{m: run["test"][m] for m in METRICS},
                         **{f"{m}_{end}": run["test_ci"][m][i] for m in METRICS
                            for i, end in enumerate(("ci_low", "ci_high"))}})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["dataset", "method", "train_data", "real_ratio", "seed"]).reset_index(drop=True)


def render_markdown(df: pd.DataFrame, records: Iterable[Mapping[str, Any]]) -> str:
    """Per (dataset, method, train_data, ratio): each metric's mean ± std over seeds ('–' with one seed) and the
    95 % bootstrap interval of that mean over test samples (the records' ``mean_ci``)."""
    ci = {tuple(rec[k] for k in KEYS): rec["mean_ci"][None] for rec in records}
    g = df.groupby(KEYS, sort=True)
    mean, std, n = g[METRICS].mean(), g[METRICS].std(ddof=1), g.size()
    lines = ["| " + " | ".join([*KEYS, "seeds", *METRICS]) + " |", "|" + "---|" * (len(KEYS) + 1 + len(METRICS))]
    for idx in mean.index:
        cells = [str(v) for v in idx] + [str(n[idx])]
        for m in METRICS:
            spread = f"{std.loc[idx, m]:.3f}" if n[idx] > 1 else "–"
            _, low, high = ci[idx][m]
            cells.append(f"{mean.loc[idx, m]:.3f} ± {spread} [{low:.3f}, {high:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nmean ± std over seeds [95 % bootstrap interval of the mean over test samples]; real + synthetic "
            "against real: results/tables/table3_gaps.csv\n")
    return "\n".join(lines) + "\n" + note


GAP_COLUMNS = ["dataset", "method", "real_ratio", "train_data", "seeds", "metric", *VALUE_COLUMNS, "gap_vs_real",
               "ci_low", "ci_high"]


def synthetic_gaps(runs: Iterable[tuple[Mapping[str, Any], Path]], metric: str, seeds: Sequence[int],
                   resamples: int) -> pd.DataFrame:
    """Each real + synthetic run against the real run of its (dataset, method, ratio): the ``metric`` gap (mean over
    seeds) with its seed-paired 95 % bootstrap interval (VAP-Diffusion Table 3's comparison)."""
    runs = list(runs)
    real = {tuple(ident[k] for k in ("dataset", "method", "real_ratio")): path
            for ident, path in runs if ident["train_data"] == "real"}
    rows = []
    for ident, path in runs:
        key = tuple(ident[k] for k in ("dataset", "method", "real_ratio"))
        if ident["train_data"] == "real" or key not in real:
            continue
        rows += paired_rows([(ident, path)], real[key], [metric], seeds, resamples)
    df = pd.DataFrame(rows).rename(columns={"gap": "gap_vs_real"})
    return df.reindex(columns=GAP_COLUMNS).sort_values(["dataset", "method", "real_ratio", "train_data"],
                                                       ignore_index=True)


def plot(df: pd.DataFrame, path: Path, metric: str = "mAUC") -> None:
    """``metric`` against the real-data ratio (log x), one line per (dataset, method, train_data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # only the plot needs it (an import of ~0.5 s)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for (ds, method, td), grp in df.groupby(["dataset", "method", "train_data"], sort=True):
        agg = grp.groupby("real_ratio")[metric].agg(["mean", "std"]).reset_index()
        ax.errorbar(agg["real_ratio"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3,
                    label=f"{ds} · {method} · {td}")
    ax.set_xscale("log")
    ax.set_xlabel("real-data ratio")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def summary(df: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Headline numbers for DVC metrics: mean of each metric per (dataset, method, train_data, ratio)."""
    out: dict[str, Any] = {}
    keys = ["dataset", "method", "train_data", "real_ratio"]
    for idx, grp in df.groupby(keys, sort=True):
        key = "/".join([*map(str, idx[:3]), f"ratio_{idx[3]:g}"])
        out[key] = {m: round(float(grp[m].mean()), 6) for m in METRICS}
    out["headline"] = {"metric": metric, "mean": round(float(df[metric].mean()), 6)}
    return out
