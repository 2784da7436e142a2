"""Named experiments (medrepro.experiments): their own project folder, and the `colocated` tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import config, make_project, write_predictions

from medrepro import layout
from medrepro.errors import ParamsError
from medrepro.experiments import get_experiment, prepare_folder, run_experiment
from medrepro.report.ei_colocated import LEARNED_AUC, colocated_tables, finding_auc_fn

CLASSES = ["normal", "drusen", "fluid", "drusen_fluid"]


def _ei_run(paths: layout.RunPaths, y, skill, gains, rng):
    write_predictions(paths.predictions, y, skill, (0, 1), rng)
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps({"runs": [{"seed": s, "test_probe": {"int_gain": g}}
                                                  for s, g in zip((0, 1), gains, strict=True)]}))


@pytest.fixture
def colocated(tmp_path, monkeypatch):
    """Fabricated runs: EI at insert 0 knows every class, at insert 1 less, the baselines and towers little."""
    monkeypatch.chdir(tmp_path)
    cfg = config({"seeds": [0, 1], "report": {"n_boot": 40},
                  "ei": {"table3_methods": ["concat"], "ablations": ["insert_layer-1", "lambda_aa-0.0"]}})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    uni = [write_predictions(layout.preadapt("synth_mm", "mor", 1.0).predictions.with_suffix(f".{m}"), y, 0.2,
                             (0, 1), rng) for m in ("fundus", "oct")]
    frames = [f.assign(modality=m) for m, per_seed in zip(("fundus", "oct"), uni, strict=True) for f in per_seed]
    pd.concat(frames).to_parquet(layout.preadapt("synth_mm", "mor", 1.0).predictions, index=False)
    write_predictions(layout.fusion("synth_mm", "concat").predictions, y, 0.5, (0, 1), rng)
    _ei_run(layout.ei("synth_mm", 1.0), y, 4.0, (0.2, 0.1), rng)
    _ei_run(layout.ei_ablation("synth_mm", "insert_layer-1"), y, 1.0, (0.01, 0.02), rng)
    return cfg


def test_colocated_table_has_every_model_the_finding_and_int_gain(colocated):
    table, gaps = colocated_tables(colocated)
    labels = [f"{m}_{mod}" if mod != "all" else m for m, mod in zip(table["method"], table["modality"], strict=True)]
    assert labels == ["unimodal_mor_fundus", "unimodal_mor_oct", "concat", "ei", "ei"]
    assert list(table["insert_layer"].iloc[3:]) == [0, 1]  # the default run and the insert_layer ablation only
    ei0 = table.iloc[3]
    assert ei0["int_gain"] == pytest.approx(0.15) and ei0["int_gain_per_seed"] == "+0.2000 +0.1000"
    assert ei0["finding_AUC"] >= LEARNED_AUC and ei0["seeds_learned"] == 2
    assert (table.iloc[:3]["seeds_learned"] == 0).all() and table.iloc[:3]["int_gain"].isna().all()
    assert (table["mAP_ci_low"] <= table["mAP"]).all() and (table["mAP"] <= table["mAP_ci_high"]).all()
    assert (table["finding_AUC_ci_low"] < table["finding_AUC_ci_high"]).all()
    # each EI insertion layer against every other model, in mAP and in the finding: the seed mean, then each seed
    assert len(gaps) == 2 * 4 * 2 * 3
    pair = gaps[(gaps["ei"] == "ei_insert0") & (gaps["method"] == "concat") & (gaps["metric"] == "finding_AUC")]
    assert list(pair["seed"].astype("object").fillna(-1)) == [-1, 0, 1] and list(pair["seeds"]) == [2, 1, 1]
    mean, per_seed = pair.iloc[0], pair.iloc[1:]
    assert mean["ci_low"] > 0 and (per_seed["ci_low"] > 0).all()
    assert mean["ei_minus_method"] == pytest.approx(mean["ei_value"] - mean["method_value"])
    assert mean["ei_minus_method"] == pytest.approx(per_seed["ei_minus_method"].mean())  # paired: mean of the seeds
    assert (per_seed["ei_minus_method"] == per_seed["ei_value"] - per_seed["method_value"]).all()


def test_finding_auc_reads_the_classes_that_hold_it():
    fn = finding_auc_fn(CLASSES)
    y = np.array([0, 1, 2, 3])
    scores = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    assert fn(y, scores) == 1.0 and fn(y, scores[:, [2, 3, 0, 1]]) == 0.0
    with pytest.raises(Exception, match="no class holds the finding 'fluid'"):
        finding_auc_fn(["a", "b"])


@pytest.mark.parametrize("name", ["colocated", "independent", "vap3", "hica3", "mechanisms"])
def test_an_experiment_runs_in_its_own_folder(tmp_path, name):
    project = make_project(tmp_path / "proj")
    exp = get_experiment(name)
    assert run_experiment(exp, 1, root=project, dry_run=True) == {}  # its DAG resolves there
    folder = project / "experiments" / name
    assert (folder / "Snakefile").is_symlink() and (folder / "src").resolve() == (project / "src").resolve()
    assert (folder / ".dvc").is_dir() and (folder / ".snakemake").is_dir()
    assert not (project / "data/raw").exists() and not (project / "models").exists()  # nothing in the main folders
    prepare_folder(exp, project)  # idempotent
    (folder / "params.yaml").unlink()
    (folder / "params.yaml").write_text("seed: 0\n")
    with pytest.raises(Exception, match="is not a link"):
        prepare_folder(exp, project)
    with pytest.raises(ParamsError, match="unknown experiment 'nope'"):
        get_experiment("nope")



def test_each_experiment_stage_declares_the_tables_its_experiment_writes():
    from helpers import root_stages

    from medrepro.experiments import EXPERIMENTS

    stages = {s.cmd.split("--name ")[1].split()[0]: s for s in root_stages() if "stages.experiment" in s.cmd}
    assert set(stages) == set(EXPERIMENTS)
    for name, exp in EXPERIMENTS.items():
        assert set(stages[name].outs) == {str(p) for p in exp.outputs}, name
