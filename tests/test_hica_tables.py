"""HiCA Tables I and II from saved predictions: every method against HiCA, paired by seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import config, write_predictions

from medrepro import layout
from medrepro.report.hica_tables import table1, table2

CLASSES = ["normal", "drusen", "fluid", "drusen_fluid"]


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config({"seeds": [0, 1], "hica": {"subsets": ["shot_5"], "ablation_subsets": ["shot_5"],
                                            "unseen": {"subset": "shot_5"}, "noise": {"subset": "shot_5"},
                                            "explain": {"subset": "shot_5"}},
                  "report": {"n_boot": 30}})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    runs = {("zeroshot", "unlabelled"): 0.1, ("cnn", "shot_5"): 0.8, ("transfer", "shot_5"): 1.2,
            ("hica", "shot_5"): 2.5,
            ("hica_no_global", "shot_5"): 1.0, ("hica_no_local", "shot_5"): 2.4, ("hica_no_cross", "shot_5"): 2.3,
            ("hica_noise_irrelevant", "shot_5"): 2.4, ("hica_noise_replace", "shot_5"): 1.2}
    for (method, subset), skill in runs.items():
        write_predictions(layout.hica("synth_mm", method, subset).predictions, y, skill, (0, 1), rng)
    return cfg


def test_table1_compares_the_baselines_with_hica(cfg):
    df = table1(cfg)
    assert list(df["method"].unique()) == ["zeroshot", "cnn", "transfer", "hica"]
    assert set(df["metric"]) == {"accuracy", "mAUC"} and (df["seeds"] == 2).all()
    hica = df[df["method"] == "hica"]
    assert hica["gap"].isna().all()
    for method in ("zeroshot", "cnn", "transfer"):
        rows = df[df["method"] == method]
        assert (rows["gap"] < 0).all() and (rows["ci_high"] < 0).all()  # HiCA clearly ahead on both metrics
        for _, r in rows.iterrows():
            ref = hica[hica["metric"] == r["metric"]]["value"].item()
            assert r["gap"] == pytest.approx(r["value"] - ref)


def test_every_row_carries_its_own_interval_and_seed_spread(cfg):
    from medrepro.metrics.classification import metric_value
    from medrepro.report.scores import seed_scores

    df = table1(cfg)
    assert (df["value_ci_low"] <= df["value"]).all() and (df["value"] <= df["value_ci_high"]).all()
    assert (df["value_ci_high"] - df["value_ci_low"] > 0).all()  # 300 test samples: a real width
    row = df[(df["method"] == "cnn") & (df["metric"] == "mAUC")].iloc[0]
    y, scores, _ = seed_scores(layout.hica("synth_mm", "cnn", "shot_5").predictions)
    per_seed = [metric_value(y, scores[s], "mAUC") for s in (0, 1)]
    assert row["value_std"] == pytest.approx(np.std(per_seed, ddof=1))


def test_table2_has_every_ablation(cfg):
    df = table2(cfg)
    assert list(df["method"].unique()) == ["hica", "hica_no_global", "hica_no_local", "hica_no_cross"]
    no_global = df[(df["method"] == "hica_no_global") & (df["metric"] == "mAUC")]
    assert no_global["ci_high"].item() < 0


def test_table6_reads_each_methods_timings_and_names_a_missing_file(cfg):
    from medrepro.errors import DataError
    from medrepro.io import write_json
    from medrepro.report.hica_tables import table6

    epochs_of = {("zeroshot", "unlabelled"): 10, ("cnn", "shot_5"): 4, ("transfer", "shot_5"): 4,
                 ("hica", "shot_5"): 5}
    for (method, subset), epochs in epochs_of.items():
        runs = [{"seed": s, "train_s": 20.0 + s, "epochs_run": epochs, "samples_per_s": 100.0,
                 "inference_images_per_s": 500.0 + s, "peak_mem_mb": 900.0 + s} for s in (0, 1)]
        write_json(layout.hica("synth_mm", method, subset).metrics, {"runs": runs})
    df = table6(cfg)
    assert list(df["method"]) == ["zeroshot", "cnn", "transfer", "hica"]
    hica = df[df["method"] == "hica"].iloc[0]
    assert hica["train_s_per_epoch"] == pytest.approx((20 / 5 + 21 / 5) / 2)
    assert hica["inference_images_per_s"] == 500.5 and hica["peak_mem_mb"] == 901.0
    layout.hica("synth_mm", "cnn", "shot_5").metrics.unlink()
    with pytest.raises(DataError, match="cnn/shot_5.json"):
        table6(cfg)


def test_table4_scores_the_unseen_classes_separately(cfg, monkeypatch):
    from medrepro.report.hica_tables import table4

    monkeypatch.setattr("medrepro.data.manifest.load_manifest", lambda root: (None, {"classes": CLASSES}))
    rng = np.random.default_rng(1)
    y = pd.read_parquet(layout.hica("synth_mm", "hica", "shot_5").predictions).query("seed == 0")["label"].to_numpy()
    write_predictions(layout.hica("synth_mm", "hica_unseen", "shot_5").predictions, y, 2.0, (0, 1), rng)
    df = table4(cfg)
    assert list(df["method"].unique()) == ["zeroshot", "hica_unseen"]
    assert set(df["metric"]) == {"accuracy_unseen", "AUC_unseen", "accuracy_seen"}
    assert (df["unseen_classes"] == "drusen_fluid").all()
    zs = df[(df["method"] == "zeroshot") & (df["metric"] == "AUC_unseen")].iloc[0]
    assert zs["gap"] < 0 and zs["ci_high"] < 0


def test_table5_compares_noisy_descriptors_with_clean(cfg):
    from medrepro.report.hica_tables import table5

    df = table5(cfg)
    assert list(df["method"].unique()) == ["hica", "hica_noise_irrelevant", "hica_noise_replace"]
    replaced = df[(df["method"] == "hica_noise_replace") & (df["metric"] == "mAUC")].iloc[0]
    assert replaced["gap"] < 0 and replaced["ci_high"] < 0


def test_the_transfer_baseline_loads_its_pretrained_weights_or_names_the_missing_file(cfg):
    from medrepro.errors import WeightsError
    from medrepro.hica.baselines import transfer_model, transfer_weights

    with pytest.raises(WeightsError, match="cnn_pretrain"):
        transfer_model(cfg)
    transfer_weights(cfg).parent.mkdir(parents=True)
    transfer_weights(cfg).write_bytes(b"")
    block = transfer_model(cfg)
    assert block["pretrained"] and block["weights"] == str(transfer_weights(cfg)) and block["arch"] == "resnet18"
