"""The `mechanisms` experiment's table: each mechanism of the papers against its mutation, seed-paired.

A *contrast* compares two runs scored on the same test samples with the same seeds: the model with a mechanism
and the model without it (the mutation). Each row holds the metric with and without (means over seeds), the gap
with − without and its seed-paired 95 % interval (``report.bootstrap.paired_bootstrap_seeds``), each seed's own
gap with its interval, and on how many seeds the interval excludes 0 on the side of the mean gap (``seeds_moved``:
seeds moving against the mean do not count). The verdict is ``moves`` when at least two thirds of the seeds move
(2 of 3), else ``level``: a mechanism whose removal leaves its metric level is not shown to work by this data.
``direction`` says which side the mean gap is on: a mechanism can move its metric down. The intervals resample
test samples only; ``seeds_beyond_control`` counts the seeds whose gap is also larger than what retraining alone
moved a seed by (the control row, below).

Contrasts, from the experiment's params (``config/experiments/mechanisms.yaml``):

- EI (Table 7 methods, per modality): every PEFT method of ``ei.table7_methods`` and pre-adaptation's MoR
  against the linear probe (the frozen tower: what the adapters add);
- EI (multimodal, fused): EI against each ``ei.ablations`` mutation it names (``intervention-false``: no [INT]
  tokens; ``lambda_aa-0.0``: no L_aa; ``lambda_ag-0.0``: no L_ag), and against EI whose towers are linear probes
  (``ei.table8_methods``' ``linear_probe``); a ``lambda_aa`` setting within 5 % of ``ei.lambda_aa`` is the
  *control* row: EI retrained with nothing that matters changed, whose gap is training noise (the intervals
  resample test samples only, so a seed can "move" by retraining alone);
- EI (pre-adaptation): MoR against the same runs with their LoRA up-projections zeroed at test time
  (``layout.lora_zeroed``: the trained head on the frozen tower), when ``ei.adapter`` has LoRA branches;
- HiCA: HiCA against each ``hica.ablations`` loss removed, on every ``hica.ablation_subsets`` subset;
- VAP-Diffusion (generation, from ``vap_eval``'s paired gaps, train bank, per modality): caption conditioning —
  ``vap`` against ``vap_shuffled`` (captions shuffled within class) on prompt adherence — and PCM — ``vap``
  against ``vap_nopcm`` on CAS and FD — where ``generation_metrics.generators`` holds both;
- VAP-Diffusion (downstream): every ``downstream.methods`` classifier on real + each generator's images against
  real + class-mean images (``class_mean`` in ``synthesis.generators``), at each ``synthesis.ratios`` ratio.

A generation row's interval is ``vap_eval``'s: generated rows resampled once for both generators (paired), the
mean's replicate i the mean of the seeds' replicates i; ``with``/``without`` are the generators' mean rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrepro import layout
from medrepro.config import Config, parse_ablation
from medrepro.errors import DataError
from medrepro.hica.methods import METHOD, method_name
from medrepro.metrics.classification import metric_value
from medrepro.models.adapters import LORA_FAMILY
from medrepro.report.bootstrap import paired_bootstrap_seeds
from medrepro.report.scores import aligned_seeds, read_predictions

COLUMNS = ["system", "dataset", "mechanism", "mutation", "subset", "modality", "metric", "seeds", "with",
           "without", "gap", "ci_low", "ci_high", "seed_gaps", "seeds_moved", "verdict", "direction",
           "seeds_beyond_control"]
PROBE = "linear_probe"
#: ablation entries of ``ei.ablations`` that remove a mechanism: (mechanism, mutation)
EI_MUTATIONS = {"intervention-false": ("[INT] tokens (Eq. 1-2)", "EI without [INT]"),
                "lambda_aa-0.0": ("auxiliary loss L_aa (Eq. 6)", "lambda_aa = 0"),
                "lambda_ag-0.0": ("gating loss L_ag (Eq. 7)", "lambda_ag = 0")}
#: the mechanism column of the control row (no mechanism: training noise)
CONTROL = "control: none (the same EI retrained)"
HICA_MUTATIONS = {"no_global": "global alignment (Eq. 3)", "no_local": "local ROI alignment (Eq. 4)",
                  "no_cross": "cross-category separation (Eq. 5)"}
#: generation contrasts: (with, without) generator → (mechanism, mutation, metric columns; FD: the FD column)
VAP_MUTATIONS = {("vap", "vap_shuffled"): ("caption conditioning t_mix (Sec. 2.2)", "captions shuffled within class",
                                           ("adherence",)),
                 ("vap", "vap_nopcm"): ("prototype condition mechanism PCM (Sec. 2.4)", "vap_nopcm (PCM off)",
                                        ("CAS", "FD"))}
CLASS_MEAN = "class_mean"


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


@dataclass(frozen=True)
class GenerationContrast(Contrast):
    """Two generators of ``vap_eval`` compared on one metric column of its paired gaps (``with_path``: its metric
    rows, ``without_path``: its gaps)."""

    with_generator: str = ""
    without_generator: str = ""


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
            named = EI_MUTATIONS.get(setting) or _control(setting, ei.lambda_aa)
            if named:
                yield Contrast("EI", d, *named, "mAP", full, layout.ei_ablation(d, setting).predictions)
        if PROBE in ei.table8_methods:
            yield Contrast("EI", d, f"{ei.adapter} inside EI", "linear-probe towers", "mAP", full,
                           layout.ei_peft(d, PROBE).predictions)
        if ei.adapter in LORA_FAMILY:
            pre = layout.preadapt(d, ei.adapter, layout.FULL).predictions
            for modality in _modalities(pre) if modalities else ["all"]:
                yield Contrast("EI", d, f"PEFT {ei.adapter} (pre-adaptation)", "adapters zeroed at test time",
                               "mAP", pre, layout.lora_zeroed(d, ei.adapter), modality)
    for d in cfg.hica.datasets:
        for s in cfg.hica.ablation_subsets:
            for a in cfg.hica.ablations:
                yield Contrast("HiCA", d, HICA_MUTATIONS.get(a, a), f"HiCA {a}", "mAUC",
                               layout.hica(d, METHOD, s).predictions, layout.hica(d, method_name(a), s).predictions,
                               subset=s)
    yield from _vap_contrasts(cfg, modalities)


def _vap_contrasts(cfg: Config, modalities: bool) -> Iterator[Contrast]:
    """VAP-Diffusion's generation contrasts (per modality) and its downstream class-mean contrasts."""
    evaluated = cfg.generation_metrics.generators
    for d in cfg.datasets:
        rows, gaps = layout.generation_eval(d)
        for (g, mutant), (mechanism, mutation, metrics) in VAP_MUTATIONS.items():
            if g not in evaluated or mutant not in evaluated:
                continue
            if modalities:  # the FD column is named by the extractor (read once per dataset)
                metrics = tuple(_fd_column(gaps) if m == "FD" else m for m in metrics)
            for modality in _gap_modalities(gaps) if modalities else ["all"]:
                for metric in metrics:
                    yield GenerationContrast("VAP-Diffusion", d, mechanism, mutation, metric, rows, gaps, modality,
                                             "train bank", g, mutant)
        if CLASS_MEAN not in cfg.synthesis.generators:
            continue
        for g in cfg.synthesis.generators:
            if g == CLASS_MEAN:
                continue
            for method in cfg.downstream.methods:
                for r in cfg.synthesis.ratios:
                    yield Contrast("VAP-Diffusion", d, f"synthetic images of {g} (Sec. 2.3)",
                                   "class-mean images", cfg.report.headline_metric,
                                   layout.downstream(d, method, layout.train_data_of(g), r).predictions,
                                   layout.downstream(d, method, layout.train_data_of(CLASS_MEAN), r).predictions,
                                   subset=f"{method} at {r:g}")


def _modalities(path: Path) -> list[str]:
    df = read_predictions(path)
    return sorted(df["modality"].unique()) if "modality" in df else ["all"]


def _control(setting: str, lambda_aa: float) -> tuple[str, str] | None:
    """The control row: EI retrained with λ1 within 5 % of its value (nothing the losses ask for changes), so its
    gap shows how far training alone moves a seed (early stopping, float order) beside the test-sample interval."""
    knob, value = parse_ablation(setting)
    if knob == "lambda_aa" and lambda_aa and value != lambda_aa and abs(value / lambda_aa - 1) <= 0.05:
        return CONTROL, f"lambda_aa = {value:g} (default {lambda_aa:g})"
    return None


def _gap_modalities(path: Path) -> list[str]:
    return sorted(pd.read_parquet(path, columns=["modality"])["modality"].unique())


def _fd_column(path: Path) -> str:
    """The Fréchet distance column of ``vap_eval``'s gaps (``FID`` or ``FD_<extractor>``)."""
    found = sorted({m for m in pd.read_parquet(path, columns=["metric"])["metric"] if m.startswith(("FD", "FID"))})
    if not found:
        raise DataError(f"{path}: no FD or FID gaps")
    return found[0]


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
    return _verdict(c, mean.gap, mean.low, mean.high, [(g.gap, g.low, g.high) for g in per_seed],
                    float(np.mean([metric_value(y, s, c.metric, multilabel) for s in a])),
                    float(np.mean([metric_value(y, s, c.metric, multilabel) for s in b])))


def _verdict(c: Contrast, gap: float, low: float, high: float, per_seed: list[tuple[float,
             float, float]], with_value: float, without_value: float) -> dict[str, Any]:
    """A table row from the mean gap, its interval and each seed's (gap, low, high)."""
    n_moved = sum(moved(lo, hi, np.sign(gap)) for _, lo, hi in per_seed)
    return {"system": c.system, "dataset": c.dataset, "mechanism": c.mechanism, "mutation": c.mutation,
            "subset": c.subset, "modality": c.modality, "metric": c.metric, "seeds": len(per_seed),
            "with": with_value, "without": without_value, "gap": gap, "ci_low": low, "ci_high": high,
            "seed_gaps": " ".join(f"{g:+.4f} [{lo:+.4f}, {hi:+.4f}]" for g, lo, hi in per_seed),
            "seeds_moved": n_moved, "verdict": "moves" if n_moved and 3 * n_moved >= 2 * len(per_seed) else "level",
            "direction": "with > without" if gap > 0 else "with < without" if gap < 0 else "equal",
            "_gaps": [g for g, _, _ in per_seed]}


def beyond_control(rows: list[dict[str, Any]]) -> None:
    """``seeds_beyond_control`` of each EI row: its seeds whose gap, on the side of the mean gap, is larger than the
    control row's largest seed gap in either direction (what retraining alone moved a seed by); NaN without a
    control. A "moves" verdict whose seeds are not beyond the control could come from training noise."""
    control = [r for r in rows if r["mechanism"] == CONTROL]
    for r in rows:
        same = [c for c in control if c["system"] == r["system"] and c["dataset"] == r["dataset"]
                and c["metric"] == r["metric"]]
        if not same or r["mechanism"] == CONTROL:
            r["seeds_beyond_control"] = float("nan")
            continue
        noise = max(abs(g) for g in same[0]["_gaps"])
        r["seeds_beyond_control"] = sum(np.sign(g) == np.sign(r["gap"]) and abs(g) > noise for g in r["_gaps"])


def generation_row(c: GenerationContrast) -> dict[str, Any]:
    """A generation contrast's row from ``vap_eval``'s paired gaps (b − a: with − without) and mean rows."""
    gaps = pd.read_parquet(c.without_path)
    pick = gaps[(gaps["modality"] == c.modality) & (gaps["bank"] == "train") & (gaps["metric"] == c.metric)
                & (gaps["a"] == c.without_generator) & (gaps["b"] == c.with_generator)]
    if pick.empty:
        raise DataError(f"{c.without_path}: no {c.metric} gap of {c.with_generator} − {c.without_generator} "
                        f"({c.modality}); rerun vap_eval with both in generation_metrics.generators")
    seeds = pick[pick["seed"].notna()].sort_values("seed")
    mean = pick[pick["seed"].isna()]
    whole = mean.iloc[0] if len(mean) else seeds.iloc[0]  # one seed: its own row is the mean
    rows = pd.read_parquet(c.with_path)
    rows = rows[(rows["modality"] == c.modality) & (rows["bank"] == "train")
                & (rows["seed"].isna() if len(mean) else rows["seed"].notna())].set_index("generator")
    per_seed = [(float(r.gap_b_minus_a), float(r.ci_low), float(r.ci_high)) for r in seeds.itertuples()]
    return _verdict(c, float(whole["gap_b_minus_a"]), float(whole["ci_low"]), float(whole["ci_high"]), per_seed,
                    float(rows.loc[c.with_generator, c.metric]), float(rows.loc[c.without_generator, c.metric]))


def mechanisms_table(cfg: Config) -> pd.DataFrame:
    """The table of every contrast (paths relative to the experiment's folder, the working directory)."""
    rows = [generation_row(c) if isinstance(c, GenerationContrast) else contrast_row(c, cfg.report.n_boot, cfg.seed)
            for c in contrasts(cfg)]
    beyond_control(rows)
    return pd.DataFrame(rows, columns=COLUMNS)
