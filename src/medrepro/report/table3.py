"""results/table3.csv and its renderings: test scores per (dataset, method, train_data, real_ratio, seed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ["dataset", "method", "train_data", "real_ratio", "seed", "n_real", "n_synthetic",
           "mAP", "mAUC", "mS2", "macro_f1", "accuracy"]
METRICS = COLUMNS[7:]


def write_table(df: pd.DataFrame, path: Path) -> None:
    """A result table as CSV, written atomically; floats with 6 decimals (every table uses this format)."""
    from medrepro.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")


def collect_rows(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per seed of every scored record (``report.scores.scored_record``), in the DESIGN.md column order."""
    rows = []
    for rec in records:
        for run in rec["runs"]:
            rows.append({"dataset": rec["dataset"], "method": rec["method"], "train_data": rec["train_data"],
                         "real_ratio": rec["real_ratio"], "seed": run["seed"], "n_real": run["n_real"],
                         "n_synthetic": run["n_synthetic"], **{m: run["test"][m] for m in METRICS}})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["dataset", "method", "train_data", "real_ratio", "seed"]).reset_index(drop=True)


def render_markdown(df: pd.DataFrame) -> str:
    """Mean ± std over seeds (std shown as '–' with a single seed)."""
    keys = ["dataset", "method", "train_data", "real_ratio"]
    g = df.groupby(keys, sort=True)
    mean, std, n = g[METRICS].mean(), g[METRICS].std(ddof=1), g.size()
    lines = ["| " + " | ".join(keys + ["seeds"] + METRICS) + " |", "|" + "---|" * (len(keys) + 1 + len(METRICS))]
    for idx in mean.index:
        cells = [str(v) for v in idx] + [str(n[idx])]
        for m in METRICS:
            s = std.loc[idx, m]
            cells.append(f"{mean.loc[idx, m]:.3f} ± {s:.3f}" if n[idx] > 1 else f"{mean.loc[idx, m]:.3f} ± –")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
