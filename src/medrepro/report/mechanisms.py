"""The `mechanisms` experiment's table: each mechanism of the papers against its mutation, seed-paired.

A *contrast* compares two runs scored on the same test samples with the same seeds: the model with a mechanism
and the model without it (the mutation). Each row holds the metric with and without (means over seeds), the gap
with − without and its seed-paired 95 % interval (``report.bootstrap.paired_bootstrap_seeds``), each seed's own
gap with its interval, and on how many seeds the interval excludes 0 on the side of the mean gap (``seeds_moved``:
seeds moving against the mean do not count). The verdict is ``moves`` when at least two thirds of the seeds move
(2 of 3), else ``level``: a mechanism whose removal leaves its metric level is not shown to work by this data.
``direction`` says which side the mean gap is on: a mechanism can move its metric down.

Contrasts, from the experiment's params (``config/experiments/mechanisms.yaml``):

- EI (Table 7 methods, per modality): every PEFT method of ``ei.table7_methods`` and pre-adaptation's MoR
  against the linear probe (the frozen tower: what the adapters add);
- EI (multimodal, fused): EI against each ``ei.ablations`` mutation it names (``intervention-false``: no [INT]
  tokens; ``lambda_aa-0.0``: no L_aa; ``lambda_ag-0.0``: no L_ag), and against EI whose towers are linear probes
  (``ei.table8_methods``' ``linear_probe``);
- HiCA: HiCA against each ``hica.ablations`` loss removed, on every ``hica.ablation_subsets`` subset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config
from medrepro.errors import DataError
from medrepro.hica.methods import METHOD, method_name
from medrepro.metrics.classification import metric_value
from medrepro.report.bootstrap import paired_bootstrap_seeds
from medrepro.report.scores import aligned_seeds, read_predictions

COLUMNS = ["system", "dataset", "mechanism", "mutation", "subset", "modality", "metric", "seeds", "with",
           "without", "gap", "ci_low", "ci_high", "seed_gaps", "seeds_moved", "verdict", "direction"]
PROBE = "linear_probe"
#: ablation entries of ``ei.ablations`` that remove a mechanism: (mechanism, mutation)
EI_MUTATIONS = {"intervention-false": ("[INT] tokens (Eq. 1-2)", "EI without [INT]"),
                "lambda_aa-0.0": ("auxiliary loss L_aa (Eq. 6)", "lambda_aa = 0"),
                "lambda_ag-0.0": ("gating loss L_ag (Eq. 7)", "lambda_ag = 0")}
HICA_MUTATIONS = {"no_global": "global alignment (Eq. 3)", "no_local": "local ROI alignment (Eq. 4)",
                  "no_cross": "cross-category separation (Eq. 5)"}


@dataclass(frozen=True)
class Contrast:
    """The runs with and without one mechanism (``modality``: one modality of a unimodal predictions file)."""

    system: str
    dataset: str
    mechanism: str
    mutation: str
    metric: str
    with_path: Path
    without_path: Path
    modality: str = "all"
    subset: str = ""


def contrasts(cfg: Config, modalities: bool = True) -> Iterator[Contrast]:
    """Every contrast the experiment's params name (module docstring). ``modalities=False``: the unimodal ones
    once, without reading their predictions (which runs a contrast needs, before they exist)."""
    ei = cfg.ei
    for d in ei.datasets:
        probe = layout.peft(d, PROBE).predictions
        methods = [(f"PEFT {m}", layout.peft(d, m).predictions) for m in ei.table7_methods if m != PROBE]
        methods.append((f"PEFT {ei.adapter} (pre-adaptation)", layout.preadapt(d, ei.adapter, layout.FULL).predictions))
        for modality in _modalities(probe) if modalities else ["all"]:
            for name, path in methods:
                yield Contrast("EI", d, name, "linear probe (frozen tower)", "mAP", path, probe, modality)
        full = layout.ei(d, layout.FULL).predictions
        for setting in ei.ablations:
            if setting in EI_MUTATIONS:
                mechanism, mutation = EI_MUTATIONS[setting]
                yield Contrast("EI", d, mechanism, mutation, "mAP", full, layout.ei_ablation(d, setting).predictions)
        if PROBE in ei.table8_methods:
            yield Contrast("EI", d, f"{ei.adapter} inside EI", "linear-probe towers", "mAP", full,
                           layout.ei_peft(d, PROBE).predictions)
    for d in cfg.hica.datasets:
        for s in cfg.hica.ablation_subsets:
            for a in cfg.hica.ablations:
                yield Contrast("HiCA", d, HICA_MUTATIONS.get(a, a), f"HiCA {a}", "mAUC",
                               layout.hica(d, METHOD, s).predictions, layout.hica(d, method_name(a), s).predictions,
                               subset=s)


def _modalities(path: Path) -> list[str]:
    df = read_predictions(path)
    return sorted(df["modality"].unique()) if "modality" in df else ["all"]


def _scores(path: Path, modality: str) -> tuple[np.ndarray, dict[int, np.ndarray], bool]:
    df = read_predictions(path)
    if modality != "all":
        df = df[df["modality"] == modality]
    return aligned_seeds(df, str(path))


def moved(low: float, high: float, sign: float = 0.0) -> bool:
    """An interval that excludes 0 (``sign`` > 0: above it; < 0: below it; 0: either)."""
    return low > 0 if sign > 0 else high < 0 if sign < 0 else (low > 0 or high < 0)


def contrast_row(c: Contrast, resamples: int, boot_seed: int) -> dict[str, Any]:
    """One table row: means, the seed-paired gap with − without, each seed's gap and the verdict."""
    y, with_scores, multilabel = _scores(c.with_path, c.modality)
    y_wo, without_scores, _ = _scores(c.without_path, c.modality)
    if not np.array_equal(y, y_wo) or sorted(with_scores) != sorted(without_scores):
        raise DataError(f"{c.without_path}: test samples or seeds differ from {c.with_path}'s (rerun both)")
    seeds = sorted(with_scores)
    a, b = [with_scores[s] for s in seeds], [without_scores[s] for s in seeds]
    mean = paired_bootstrap_seeds(y, a, b, c.metric, multilabel, resamples, seed=boot_seed)
    per_seed = [paired_bootstrap_seeds(y, a[k:k + 1], b[k:k + 1], c.metric, multilabel, resamples, seed=boot_seed)
                for k in range(len(seeds))]
    n_moved = sum(moved(g.low, g.high, np.sign(mean.gap)) for g in per_seed)
    return {"system": c.system, "dataset": c.dataset, "mechanism": c.mechanism, "mutation": c.mutation,
            "subset": c.subset, "modality": c.modality, "metric": c.metric, "seeds": len(seeds),
            "with": float(np.mean([metric_value(y, s, c.metric, multilabel) for s in a])),
            "without": float(np.mean([metric_value(y, s, c.metric, multilabel) for s in b])),
            "gap": mean.gap, "ci_low": mean.low, "ci_high": mean.high,
            "seed_gaps": " ".join(f"{g.gap:+.4f} [{g.low:+.4f}, {g.high:+.4f}]" for g in per_seed),
            "seeds_moved": n_moved, "verdict": "moves" if n_moved and 3 * n_moved >= 2 * len(seeds) else "level",
            "direction": "with > without" if mean.gap > 0 else "with < without" if mean.gap < 0 else "equal"}


def mechanisms_table(cfg: Config) -> pd.DataFrame:
    """The table of every contrast (paths relative to the experiment's folder, the working directory)."""
    rows = [contrast_row(c, cfg.report.n_boot, cfg.seed) for c in contrasts(cfg)]
    return pd.DataFrame(rows, columns=COLUMNS)
