"""table3's intervals: every row's bootstrap interval over test samples, the seed mean's, and the seed-paired gap of
each real + synthetic run to its real run; the resampled metrics they rest on equal scoring each resample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import write_predictions

from medrepro.metrics.classification import metric_value
from medrepro.metrics.resampled import METRICS as RESAMPLED
from medrepro.metrics.resampled import resample_counts, resampled_metric
from medrepro.report.scores import score_runs, scored_record
from medrepro.report.table3 import COLUMNS, GAP_COLUMNS, METRICS, collect_rows, render_markdown, synthetic_gaps


@pytest.mark.parametrize("multilabel", [False, True])
def test_resampled_metrics_equal_scoring_each_resample(multilabel):
    rng = np.random.default_rng(0)
    n, k = 120, 4
    y = rng.integers(0, 2, (n, k)) if multilabel else rng.integers(0, k, n)
    scores = rng.random((n, k)).round(2)  # rounded: tied scores, as duplicated samples make
    counts = resample_counts(n, 30, 3)
    draws = np.random.default_rng(3)
    for r in range(30):
        idx = draws.integers(0, n, n)  # the draws resample_counts counts
        assert np.array_equal(np.bincount(idx, minlength=n), counts[r])
        for m in RESAMPLED:
            assert resampled_metric(y, scores, m, multilabel, counts)[r] == pytest.approx(
                metric_value(y[idx], scores[idx], m, multilabel), abs=1e-12, nan_ok=True), (m, r)


def _runs(tmp_path, seeds=(0, 1)):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    inputs = []
    for train_data, skill in (("real", 1.0), ("real+syn_vap", 2.0)):
        path = tmp_path / f"{train_data}.parquet"
        df = pd.concat(write_predictions(path, y, skill, seeds, rng))
        df.assign(n_real=30, n_synthetic=0 if train_data == "real" else 50).to_parquet(path, index=False)
        inputs.append(({"dataset": "synth_mm", "method": "densenet121", "train_data": train_data,
                        "real_ratio": 0.01}, path))
    return inputs


def test_rows_carry_intervals_and_the_markdown_the_seed_mean(tmp_path):
    inputs = _runs(tmp_path)
    records = [scored_record(path, 200, **ident) for ident, path in inputs]
    df = collect_rows(records)
    assert list(df.columns) == COLUMNS and len(df) == 4
    for m in METRICS:
        assert (df[f"{m}_ci_low"] <= df[m]).all() and (df[m] <= df[f"{m}_ci_high"]).all()
        assert (df[f"{m}_ci_high"] - df[f"{m}_ci_low"] > 0).all()
    mean, low, high = records[0]["mean_ci"][None]["mAUC"]
    assert mean == pytest.approx(df.loc[df["train_data"] == "real", "mAUC"].mean()) and low < mean < high
    md = render_markdown(df, records)
    assert f"[{low:.3f}, {high:.3f}]" in md and " ± " in md


def test_one_seed_reuses_the_mean_interval(tmp_path):
    ident, path = _runs(tmp_path, seeds=(0,))[0]
    record = scored_record(path, 100, **ident)
    direct = score_runs(pd.read_parquet(path), 100)[0]["test_ci"]
    assert record["runs"][0]["test_ci"] == direct


def test_synthetic_gap_is_paired_by_seed(tmp_path):
    inputs = _runs(tmp_path)
    gaps = synthetic_gaps(inputs, "mAUC", [0, 1], 200)
    assert list(gaps.columns) == GAP_COLUMNS and len(gaps) == 1
    df = collect_rows(scored_record(path, 10, **ident) for ident, path in inputs)
    row = gaps.iloc[0]
    expected = df.loc[df["train_data"] != "real", "mAUC"].mean() - df.loc[df["train_data"] == "real", "mAUC"].mean()
    assert row["train_data"] == "real+syn_vap" and row["gap_vs_real"] == pytest.approx(expected)
    assert 0 < row["ci_low"] < row["gap_vs_real"] < row["ci_high"]  # skill 2 against 1: clearly better


def test_ei_gaps_carry_the_baselines_own_interval(tmp_path, monkeypatch):
    from helpers import config

    from medrepro import layout
    from medrepro.report.ei_tables import ei_gaps

    monkeypatch.chdir(tmp_path)
    cfg = config({"seeds": [0, 1], "report": {"n_boot": 40}, "ei": {"table3_methods": ["concat"]}})
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    write_predictions(layout.ei("synth_mm", 1.0).predictions, y, 3.0, (0, 1), rng)
    write_predictions(layout.fusion("synth_mm", "concat").predictions, y, 1.0, (0, 1), rng)
    (row,) = ei_gaps(cfg).to_dict("records")
    assert row["method"] == "concat" and row["ei_minus_method"] > 0 and row["ci_low"] > 0  # EI − concat
    assert row["method_value_ci_low"] <= row["method_value"] <= row["method_value_ci_high"]
    assert row["method_value_std"] >= 0
