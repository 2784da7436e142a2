"""results/tables/vap_generator_data.csv from saved predictions: gains over real, paired by seed."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from helpers import config, write_predictions

from medrepro import layout
from medrepro.errors import DataError
from medrepro.metrics.classification import classification_metrics
from medrepro.report.generator_data import generator_data_table


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config({"seeds": [0, 1], "downstream": {"methods": ["densenet121"]},
                  "synthesis": {"generator_data": {"variant": "vap", "ratios": [0.01]}}})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    ids = [f"s{i}" for i in range(400)]
    subsets = pd.concat([pd.DataFrame({"sample_id": ids, "seed": s, "ratio_0.01": [i < 4 for i in range(400)],
                                       "ratio_1.0": True}) for s in (0, 1)])
    layout.subsets("synth_mm").parent.mkdir(parents=True)
    subsets.to_parquet(layout.subsets("synth_mm"), index=False)
    skills = {"real": 0.2, layout.train_data_of("vap"): 2.0,
              layout.train_data_of(layout.generator_id("vap", "ratio_0.01")): 0.8}
    preds = {t: write_predictions(layout.downstream("synth_mm", "densenet121", t, 0.01).predictions, y, k, (0, 1),
                                   rng) for t, k in skills.items()}
    return cfg, y, preds


def test_rows_compare_both_generators_with_real_paired_by_seed(project):
    cfg, y, preds = project
    df = generator_data_table(cfg, resamples=40)
    assert list(df["train_data"]) == ["real", "real+syn_vap", "real+syn_vap-ratio_0.01"]
    assert list(df["generator_subset"].fillna("-")) == ["-", "ratio_1.0", "ratio_0.01"]
    assert list(df["generator_real_images"].fillna(-1)) == [-1, 400, 4]
    assert (df["seeds"] == 2).all() and (df["metric"] == "mAUC").all()

    def mauc(frame):
        return classification_metrics(y, frame.filter(like="score_").to_numpy())["mAUC"]

    for _, row in df.iterrows():
        assert row["value"] == pytest.approx(np.mean([mauc(f) for f in preds[row["train_data"]]]))
    full, sub = df.iloc[1], df.iloc[2]
    assert full["gain_vs_real"] == pytest.approx(full["value"] - df.iloc[0]["value"])
    assert 0 < full["gain_ci_low"] <= full["gain_vs_real"] <= full["gain_ci_high"]
    assert full["gain_vs_real"] > sub["gain_vs_real"] > 0
    assert np.isnan(df.iloc[0]["gain_vs_real"])


def test_missing_or_mismatched_runs_name_the_file(project):
    cfg, y, _ = project
    path = layout.downstream("synth_mm", "densenet121", "real+syn_vap-ratio_0.01", 0.01).predictions
    df = pd.read_parquet(path)
    df[df["seed"] == 0].to_parquet(path, index=False)  # one seed only
    with pytest.raises(DataError, match="seeds differ"):
        generator_data_table(cfg, resamples=5)
    path.unlink()
    with pytest.raises(DataError, match=re.escape(str(path))):
        generator_data_table(cfg, resamples=5)
