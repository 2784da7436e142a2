"""EI paper tables from the stages' metrics JSONs: Table 3 (fusion methods), 4 ([INT] layers), 6 (auxiliary-loss
weights), 7 (unimodal PEFT), 8 (PEFT in EI).

Every cell is a test-split score averaged over seeds (``seeds`` column), computed from the runs' saved test
predictions (``report.scores``); per-class APs are columns ``AP_<class>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medrepro import layout
from medrepro.config import Config, parse_ablation
from medrepro.layout import FULL
from medrepro.report.paired import VALUE_COLUMNS, paired_rows
from medrepro.report.scores import scored_record


def _rows(record: Mapping[str, Any], method: str, per_modality: bool = False) -> list[dict[str, Any]]:
    rows = []
    for run in record["runs"]:
        _, low, high = record["mean_ci"][run["modality"] if per_modality else None]["mAP"]
        row = {"dataset": record["dataset"], "method": method, "seed": run["seed"],
               "modality": run["modality"] if per_modality else "all",
               "trainable_params": run.get("trainable_params"), "mAP": run["test"]["mAP"],
               "mAP_ci_low": low, "mAP_ci_high": high,  # of the mean over seeds: the same in every run's row
               "mAUC": run["test"]["mAUC"], "mS2": run["test"]["mS2"]}
        row.update({f"AP_{c}": ap for c, ap in zip(record["classes"], run["test_per_class"]["AP"], strict=True)})
        rows.append(row)
    return rows


def _aggregate(rows: Iterable[dict[str, Any]], extra_keys: tuple[str, ...] = ()) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    keys = ["dataset", "modality", "method", *extra_keys]
    value_cols = [c for c in df.columns if c not in keys + ["seed"]]
    g = df.groupby(keys, sort=False)
    out = g[value_cols].mean()
    out.insert(out.columns.get_loc("mAP") + 1, "mAP_std", g["mAP"].std(ddof=1))  # over seeds; empty with one
    out.insert(0, "seeds", g["seed"].nunique())
    return out.reset_index()


def _loader(cfg: Config, root: Path | None) -> Callable[[layout.RunPaths, str], dict[str, Any]]:
    """The scored record (with ``report.n_boot`` intervals) of a run's predictions, under ``root`` if given."""
    return lambda paths, dataset: scored_record(_predictions(paths, root), cfg.report.n_boot, dataset=dataset)


def ei_gaps(cfg: Config, root: Path | None = None) -> pd.DataFrame:
    """EI − each fusion baseline of EI Table 3 in mAP, mean over seeds, with the seed-paired 95 % interval."""
    ei, rows = cfg.ei, []
    for ds in ei.datasets:
        ref = _predictions(layout.ei(ds, FULL), root)
        runs = [({"dataset": ds, "method": m}, _predictions(layout.fusion(ds, m), root)) for m in ei.table3_methods]
        for row in paired_rows(runs, ref, ["mAP"], cfg.seeds, cfg.report.n_boot):
            rows.append({**row, "gap": -row["gap"], "ci_low": -row["ci_high"], "ci_high": -row["ci_low"]})
    cols = ["dataset", "method", "seeds", "metric", *VALUE_COLUMNS, "gap", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).rename(
        columns={**{c: c.replace("value", "method_value") for c in VALUE_COLUMNS}, "gap": "ei_minus_method"})


def _predictions(paths: layout.RunPaths, root: Path | None) -> Path:
    """The run's predictions parquet, under ``root`` (a results/predictions folder elsewhere) if given."""
    return paths.predictions if root is None else root / paths.predictions.relative_to(layout.RESULTS / "predictions")


def table3(cfg: Config, root: Path | None = None) -> pd.DataFrame:
    """Unimodal MoR (per modality), the fusion baselines and EI, per dataset (EI Table 3)."""
    ei, rows, load = cfg.ei, [], _loader(cfg, root)
    for ds in ei.datasets:
        rows += _rows(load(layout.preadapt(ds, ei.adapter, FULL), ds), f"unimodal_{ei.adapter}",
                      per_modality=True)
        for m in ei.table3_methods:
            rows += _rows(load(layout.fusion(ds, m), ds), m)
        rows += _rows(load(layout.ei(ds, FULL), ds), "ei")
    return _aggregate(rows)


def table7(cfg: Config, root: Path | None = None) -> pd.DataFrame:
    """Unimodal PEFT methods per dataset and modality (EI Table 7), with trainable-parameter counts."""
    ei, rows, load = cfg.ei, [], _loader(cfg, root)
    for ds in ei.datasets:
        for m in ei.table7_methods:
            rows += _rows(load(layout.peft(ds, m), ds), m, per_modality=True)
        rows += _rows(load(layout.preadapt(ds, ei.adapter, FULL), ds), ei.adapter,
                      per_modality=True)
    return _aggregate(rows)


def table8(cfg: Config, root: Path | None = None) -> pd.DataFrame:
    """EI with different PEFT methods inside (EI Table 8; linear_probe = frozen VFM)."""
    ei, rows, load = cfg.ei, [], _loader(cfg, root)
    for ds in ei.datasets:
        for m in ei.table8_methods:
            rows += _rows(load(layout.ei_peft(ds, m), ds), f"ei_{m}")
        rows += _rows(load(layout.ei(ds, FULL), ds), f"ei_{ei.adapter}")
    return _aggregate(rows)


def _ablation(cfg: Config, knobs: tuple[str, ...], root: Path | None) -> pd.DataFrame:
    """One row per (knob, value): the ``ei_ablation`` runs of ``knobs`` plus the default EI run, per dataset."""
    ei, rows, load = cfg.ei, [], _loader(cfg, root)
    default = {"int_layer": ei.int_layer or ei.vfm.depth or "last", "insert_layer": ei.insert_layer,
               "lambda_aa": ei.lambda_aa, "lambda_ag": ei.lambda_ag}
    settings = [(s, *parse_ablation(s)) for s in ei.ablations]  # (setting, knob, value)
    for ds in ei.datasets:
        base = load(layout.ei(ds, FULL), ds)
        for knob in knobs:
            found = [(v, load(layout.ei_ablation(ds, s), ds)) for s, k, v in settings if k == knob]
            for value, rec in [(default[knob], base), *found]:
                rows += [{**r, "knob": knob, "value": value, "default": rec is base} for r in _rows(rec, "ei")]
    return _aggregate(rows, ("knob", "value", "default"))  # per knob: the default first, then params order


def table4(cfg: Config, root: Path | None = None) -> pd.DataFrame:
    """EI Table 4: the layer whose auxiliary [CLS] gives [INT], and the layer [INT] enters, varied one at a time."""
    return _ablation(cfg, ("int_layer", "insert_layer"), root)


def table6(cfg: Config, root: Path | None = None) -> pd.DataFrame:
    """EI Table 6: λ1 (L_aa) and λ2 (L_ag) varied one at a time, the other at its default."""
    return _ablation(cfg, ("lambda_aa", "lambda_ag"), root)


TABLES = {3: table3, 4: table4, 6: table6, 7: table7, 8: table8}
