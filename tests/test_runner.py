"""The training runner: one stage's artifacts (weights + description, metrics, predictions, empty checkpoints), a
model rebuilt from its own description, and tables' scores computed from the predictions equal the run's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import config

from medrepro import layout
from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import get_adapter
from medrepro.data.splits import make_subsets
from medrepro.ei.peft import unimodal_selection
from medrepro.errors import WeightsError
from medrepro.hica.runs import load_hica
from medrepro.io import read_json
from medrepro.report.scores import score_runs
from medrepro.train.classify import predict
from medrepro.train.downstream import load_classifier, run_downstream
from medrepro.train.task import load_task

pytestmark = pytest.mark.slow

SYNTH = {"n_train": 24, "n_val": 8, "n_test": 12, "gen_size": 32, "image_size": 16, "difficulty": 0.2, "leak": 0.1,
         "coupling": "independent"}
TINY = {"seeds": [0, 1], "data": {"synth_mm": SYNTH},
        "downstream": {"methods": ["densenet121"],
                       "models": {"densenet121": {"arch": "densenet121",
                                                  "kwargs": {"growth_rate": 4, "block_config": [1, 1]}}},
                       "train": {"max_epochs": 2, "batch_size": 8, "min_steps_per_epoch": 2, "warmup_epochs": 1}}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proj")
    adapter = get_adapter("synth_mm", SYNTH)
    fetch(adapter, layout.raw("synth_mm", root / "data"))
    prepare(adapter, layout.raw("synth_mm", root / "data"), layout.prepared("synth_mm", root / "data"))
    manifest = pd.read_parquet(layout.prepared("synth_mm", root / "data") / "manifest.parquet")
    out = layout.subsets("synth_mm", root / "data")
    out.parent.mkdir(parents=True)
    make_subsets(manifest, [1.0], [1], [0, 1]).to_parquet(out)
    return root


def test_stage_artifacts_rebuild_and_scores(workdir, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(workdir)
    cfg = config({**TINY, "device": "cpu"})
    record = run_downstream(cfg, "synth_mm", "densenet121", "real", 1.0)
    paths = layout.downstream("synth_mm", "densenet121", "real", 1.0)

    assert read_json(paths.metrics) == record
    assert [r["seed"] for r in record["runs"]] == [0, 1]
    for run in record["runs"]:
        assert run["samples_per_s"] > 0 and run["peak_mem_mb"] > 0 and run["wall_s"] > 0
    assert paths.checkpoints.is_dir() and not list(paths.checkpoints.iterdir())  # finished runs drop theirs

    preds = pd.read_parquet(paths.predictions)
    assert len(preds) == 2 * SYNTH["n_test"] and set(preds["seed"]) == {0, 1}
    assert {"sample_id", "label", "n_real", "trainable_params"} <= set(preds.columns)
    scored = score_runs(preds)  # what every table computes: equal to the run's own test metrics
    assert [s["test"] for s in scored] == [r["test"] for r in record["runs"]]

    model, desc = load_classifier(paths.weights(1))  # rebuilt from the description beside the weights, not params.yaml
    assert desc["builder"] == "classifier" and desc["seed"] == 1 and desc["selection"]["best_epoch"] >= 1
    with pytest.raises(WeightsError, match="a 'classifier' run, not 'hica'"):  # each kind has its own loader
        load_hica(paths.weights(1))
    data, _ = load_task("synth_mm", "ratio_1.0", 1, None, cfg.downstream.train.slices)
    probs = predict(model, data, data.test_idx, torch.device("cpu"))
    mine = preds[preds["seed"] == 1].filter(like="score_").to_numpy()
    assert (probs == mine).all()


def test_unimodal_selection_names_what_is_missing(tmp_path):
    paths = layout.RunPaths(tmp_path / "m", tmp_path / "m.json", tmp_path / "p.parquet", tmp_path / "c")
    with pytest.raises(WeightsError, match=r"seed0/fundus\.safetensors .*run the preadapt stage"):
        unimodal_selection(paths, 0, ["fundus"])
