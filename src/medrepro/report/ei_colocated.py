"""The `colocated` experiment's tables (EI's cross-modal claim, docs/reproduction-notes.md):

- ``ei_colocated.csv``: one row per model — the unimodal MoR towers (per modality), the fusion baselines of
  ``ei.table3_methods`` and EI with [INT] entering before each layer of ``insert_layer`` 0 (the default run) and of
  the ``insert_layer-k`` ablations — with mAP (mean over seeds, std, 95 % test-bootstrap interval), the AUC of the
  cross-modal finding, on how many seeds it was learned, and EI's ``int_gain`` (intervention probe) per seed.
- ``ei_colocated_gaps.csv``: each EI insertion layer − each other model, in mAP and in the finding's AUC, mean over
  seeds with the seed-paired interval (``seed`` empty), then each seed alone with its test-bootstrap interval.

The finding is synth_mm's ``fluid`` (classes whose name holds it: fluid, drusen_fluid), present under
``colocated`` only when the OCT pocket lies beneath the fundus membrane: no single image shows it. Its AUC scores
P(fluid) + P(drusen_fluid) against its presence; a seed **learned** it when that AUC is at least
``LEARNED_AUC`` = 0.75 (halfway from chance to perfect; a unimodal tower cannot pass 0.5 beyond the leak).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config, parse_ablation
from medrepro.errors import DataError
from medrepro.io import read_json
from medrepro.metrics.classification import _binary_auc
from medrepro.report.bootstrap import paired_bootstrap_seeds, seed_summary
from medrepro.report.scores import aligned_seeds, classes_of, read_predictions

FINDING = "fluid"
LEARNED_AUC = 0.75
COLUMNS = ["dataset", "method", "modality", "insert_layer", "seeds", "mAP", "mAP_std", "mAP_ci_low", "mAP_ci_high",
           "finding_AUC", "finding_AUC_std", "finding_AUC_ci_low", "finding_AUC_ci_high", "seeds_learned",
           "int_gain", "int_gain_per_seed"]
GAP_COLUMNS = ["dataset", "ei", "method", "seeds", "seed", "metric", "ei_value", "method_value", "ei_minus_method",
               "ci_low", "ci_high"]


def finding_auc_fn(classes: list[str], finding: str = FINDING) -> Callable[[np.ndarray, np.ndarray], float]:
    """(labels, scores) → AUC of the summed probability of the classes holding ``finding`` against its presence."""
    cols = [i for i, c in enumerate(classes) if finding in c.split("_")]
    if not cols:
        raise DataError(f"no class holds the finding {finding!r} (classes: {', '.join(classes)})")

    def fn(y: np.ndarray, scores: np.ndarray) -> float:
        return _binary_auc(np.isin(y, cols).astype(np.int64), scores[:, cols].sum(1))
    return fn


class _Run:
    """One model's seed-aligned test scores (one modality of a unimodal file) and its EI probe gains."""

    def __init__(self, method: str, path: Path, modality: str = "all", insert_layer: int | None = None,
                 metrics: Path | None = None) -> None:
        df = read_predictions(path)
        if modality != "all":
            df = df[df["modality"] == modality]
        self.method, self.modality, self.insert_layer, self.path = method, modality, insert_layer, path
        self.classes = classes_of(df)
        self.y, by_seed, self.multilabel = aligned_seeds(df, str(path))
        self.seeds = sorted(by_seed)
        self.scores = [by_seed[s] for s in self.seeds]
        self.int_gain = _int_gains(metrics, self.seeds) if metrics is not None else None

    @property
    def label(self) -> str:
        if self.insert_layer is not None:
            return f"ei_insert{self.insert_layer}"
        return self.method if self.modality == "all" else f"{self.method}_{self.modality}"


def _int_gains(metrics: Path, seeds: list[int]) -> list[float]:
    if not Path(metrics).is_file():
        raise DataError(f"run metrics missing: {metrics} (run the EI stage that writes them)")
    by_seed = {r["seed"]: r.get("test_probe", {}).get("int_gain") for r in read_json(metrics)["runs"]}
    if any(by_seed.get(s) is None for s in seeds):
        raise DataError(f"{metrics}: no test_probe.int_gain for every seed {seeds} (rerun its EI stage)")
    return [float(by_seed[s]) for s in seeds]


def _runs(cfg: Config, dataset: str) -> list[_Run]:
    ei = cfg.ei
    runs = [_Run(f"unimodal_{ei.adapter}", layout.preadapt(dataset, ei.adapter, layout.FULL).predictions, m)
            for m in ("fundus", "oct")]
    runs += [_Run(m, layout.fusion(dataset, m).predictions) for m in ei.table3_methods]
    default = layout.ei(dataset, layout.FULL)
    runs.append(_Run("ei", default.predictions, insert_layer=ei.insert_layer, metrics=default.metrics))
    for setting in ei.ablations:
        knob, value = parse_ablation(setting)
        if knob == "insert_layer":
            paths = layout.ei_ablation(dataset, setting)
            runs.append(_Run("ei", paths.predictions, insert_layer=int(value), metrics=paths.metrics))
    first = runs[0]
    for run in runs[1:]:
        if not np.array_equal(run.y, first.y) or run.seeds != first.seeds:
            raise DataError(f"{run.path}: test samples or seeds differ from {first.path}'s (rerun both)")
    return runs


def _row(dataset: str, run: _Run, finding: Callable, resamples: int, boot_seed: int) -> dict[str, Any]:
    m = seed_summary(run.y, run.scores, "mAP", run.multilabel, resamples, seed=boot_seed)
    f = seed_summary(run.y, run.scores, finding, run.multilabel, resamples, seed=boot_seed)
    return {"dataset": dataset, "method": run.method, "modality": run.modality, "insert_layer": run.insert_layer,
            "seeds": len(run.seeds), "mAP": m.value, "mAP_std": m.std, "mAP_ci_low": m.low, "mAP_ci_high": m.high,
            "finding_AUC": f.value, "finding_AUC_std": f.std, "finding_AUC_ci_low": f.low,
            "finding_AUC_ci_high": f.high, "seeds_learned": int(sum(a >= LEARNED_AUC for a in f.per_seed)),
            "int_gain": None if run.int_gain is None else float(np.mean(run.int_gain)),
            "int_gain_per_seed": None if run.int_gain is None else " ".join(f"{g:+.4f}" for g in run.int_gain),
            PER_SEED: {"mAP": m.per_seed, "finding_AUC": f.per_seed}}


#: key of a row's per-seed values (dropped from the table)
PER_SEED = "_per_seed"


def colocated_tables(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ei_colocated, ei_colocated_gaps) of every dataset in ``ei.datasets`` (paths relative to the experiment's
    project folder, the working directory)."""
    rows, gaps = [], []
    resamples, boot_seed = cfg.report.n_boot, cfg.seed
    for dataset in cfg.ei.datasets:
        runs = _runs(cfg, dataset)
        finding = finding_auc_fn(runs[0].classes)
        by_label = {r.label: _row(dataset, r, finding, resamples, boot_seed) for r in runs}
        rows += by_label.values()
        for ei in (r for r in runs if r.insert_layer is not None):
            for other in (r for r in runs if r is not ei):
                for name, metric in (("mAP", "mAP"), ("finding_AUC", finding)):
                    # the mean over seeds (seed empty), then each seed alone: on how many seeds a gap holds
                    for k, seed in [(None, None), *enumerate(ei.seeds)]:
                        pick = slice(None) if k is None else slice(k, k + 1)
                        g = paired_bootstrap_seeds(ei.y, ei.scores[pick], other.scores[pick], metric,
                                                   ei.multilabel, resamples, seed=boot_seed)
                        values = [by_label[r.label][name] if k is None else by_label[r.label][PER_SEED][name][k]
                                  for r in (ei, other)]
                        gaps.append({"dataset": dataset, "ei": ei.label, "method": other.label,
                                     "seeds": len(ei.seeds) if k is None else 1, "seed": seed, "metric": name,
                                     "ei_value": values[0], "method_value": values[1], "ei_minus_method": g.gap,
                                     "ci_low": g.low, "ci_high": g.high})
    table = pd.DataFrame([{k: v for k, v in r.items() if k != PER_SEED} for r in rows], columns=COLUMNS)
    return table, pd.DataFrame(gaps, columns=GAP_COLUMNS).astype({"seed": "Int64"})
