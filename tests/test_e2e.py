"""End to end on a tiny synth_mm: Snakemake and DVC drive the same pipeline to the same, reproducible table3."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
from helpers import run

from medrepro.report.table3 import COLUMNS

pytestmark = pytest.mark.e2e


#: what DVC rebuilds: the real-data classifier (its test predictions and metrics deleted; DVC caches neither, so
#: it must train again) and table3
RETRAINED = ("downstream@synth_mm-densenet121-1.0", "table3")
CLEARED = ("results/predictions/downstream/synth_mm/densenet121/real",
           "results/metrics/downstream/synth_mm/densenet121/real", "results/table3.csv")


def test_snakemake_and_dvc_agree_and_reproduce(built_copy):
    project = built_copy
    table = pd.read_csv(project / "results" / "table3.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) == 5  # (densenet121, ei) × (real, real+syn_vap) + hica on real; one ratio, one seed
    assert set(table["method"]) == {"densenet121", "ei", "hica"}
    assert set(table["train_data"]) == {"real", "real+syn_vap"}
    assert list(table.loc[table["method"] == "hica", "train_data"]) == ["real"]
    gaps = pd.read_csv(project / "results/tables/table3_gaps.csv")
    assert set(gaps["method"]) == {"densenet121", "ei"} and (gaps["ci_low"] <= gaps["ci_high"]).all()
    syn = table[table["train_data"] == "real+syn_vap"]
    assert (syn["n_synthetic"] == 8).all() and (table.loc[table["train_data"] == "real", "n_synthetic"] == 0).all()
    manifest = pd.read_parquet(project / "data/synthetic/synth_mm/vap/manifest.parquet")
    bank = pd.read_parquet(project / "data/captions/synth_mm_bank.parquet").query("bank == 'train'")
    for _, row in manifest.iterrows():  # paired synthesis: both captions are those of one real training sample
        for m in ("fundus", "oct"):
            caption = bank[(bank.sample_id == row.source_sample) & (bank.modality == m)].t_mix.item()
            assert caption == row[f"caption_{m}"]
    assert (project / "results/plots/synthetic/synth_mm/vap.png").is_file()
    assert not (project / "models/generators/synth_mm/class").exists()  # trained only for the generation tables
    assert set(table["real_ratio"]) == {1.0}
    assert (table["n_real"] > 0).all() and table["mAUC"].between(0, 1).all()
    assert (project / "results" / "table3.md").is_file() and (project / "results" / "plots" / "table3.png").is_file()
    summary = json.loads((project / "results" / "metrics" / "summary.json").read_text())
    assert summary["headline"]["metric"] == "mAUC"
    metrics = json.loads((project / "results/metrics/downstream/synth_mm/densenet121/real/ratio_1.0.json").read_text())
    assert {"samples_per_s", "peak_mem_mb", "wall_s"} <= set(metrics["runs"][0])
    assert list((project / "logs").glob("downstream__*.log"))

    # a second Snakemake run has nothing to do; DVC sees the run as its own (onsuccess: dvc commit)
    assert "Nothing to be done" in run(["snakemake", "-n", "results/table3.csv"], project).stdout
    assert "up to date" in run(["dvc", "status", "--with-deps", "table3"], project).stdout
    first = (project / "results" / "table3.csv").read_text()

    # DVC trains a classifier again and rebuilds table3: same params + seed → the same table (identical metrics on
    # CPU); the rest of the DAG is up to date for both drivers
    for rel in CLEARED:
        path = project / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    repro = run(["dvc", "repro", "--force", "--single-item", *RETRAINED], project).stdout
    assert set(re.findall(r"Running stage '([^']+)'", repro)) == set(RETRAINED), repro
    assert (project / "results" / "table3.csv").read_text() == first
    assert "Nothing to be done" in run(["snakemake", "-n", "results/table3.csv"], project).stdout
    assert "up to date" in run(["dvc", "status", "--with-deps", "table3"], project).stdout

    # an experiment with one changed param shows up in `dvc metrics diff`
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline run"], project)
    run(["dvc", "exp", "run", "table3", "-S", "report.headline_metric=mAP"], project)
    diff = run(["dvc", "metrics", "diff", "--json"], project).stdout
    changed = json.loads(diff)
    assert "results/metrics/summary.json" in changed, diff


def test_changed_param_reruns_only_affected_rules(built_copy):
    project = built_copy
    assert "Nothing to be done" in run(["snakemake", "-n", "results/table3.csv"], project).stdout
    params = (project / "params.yaml").read_text().replace("report:\n  headline_metric: mAUC",
                                                          "report:\n  headline_metric: mAP")
    (project / "params.yaml").write_text(params)
    dry = run(["snakemake", "-n", "results/table3.csv"], project).stdout
    assert "table3" in dry and "downstream__" not in dry and "prepare__" not in dry


#: the bad-params cases of the issue tracker: each must stop both drivers before any stage, naming the key
BAD_PARAMS = [
    ({"downstream": {"train": {"batch_sizee": 16}}}, "downstream.train.batch_sizee"),
    ({"downstream": {"methods": ["densenet121x"]}}, "downstream.methods lists 'densenet121x'"),
    ({"ei": {"table3_methods": ["concat", "dynm"]}}, "ei.table3_methods lists 'dynm'"),
    ({"ei": {"insert_layer": 99}}, "insert_layer 99 is outside 0..1"),
    ({"train": {"lr_min": 0.5}}, "train.lr_min (0.5) is above train.lr_max"),
    ({"seeds": [0, 0]}, "seeds lists '0' 2 times"),
    ({"ei": {"vfm": {"kwargs": {"embed_dim": "32"}}}}, "ei.vfm.kwargs.embed_dim"),
]


def test_bad_params_stop_both_drivers_before_any_stage(project):
    import yaml

    from medrepro.config import deep_merge

    good = yaml.safe_load((project / "params.yaml").read_text())
    for i, (patch, message) in enumerate(BAD_PARAMS):
        (project / "params.yaml").write_text(yaml.safe_dump(deep_merge(good, patch), sort_keys=False))
        res = run(["snakemake", "-n", "results/table3.csv"], project, check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0 and message in out and "Traceback" not in out, (patch, out[-3000:])
        if i not in (0, 3, len(BAD_PARAMS) - 1):  # DVC: a schema, a range and a type error (one check serves all)
            continue
        res = run(["dvc", "repro", "table3"], project, check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0 and message in out, (patch, out[-3000:])
        assert not (project / "data" / "raw").exists() and not (project / "models").exists(), patch  # no stage ran
    stage = run(["python", "-m", "medrepro.stages.split", "--dataset", "synth_mm"], project, check=False)
    assert stage.returncode == 1 and message in stage.stderr


def _build(project, *targets: str) -> str:
    res = run(["snakemake", "--cores", "2", *targets], project)
    out = res.stdout + res.stderr
    assert "rule downstream" not in out and "rule synthesize" not in out  # built for table3 already, not rerun
    return out


def test_ei_tables_are_their_own_targets(built_copy):
    project = built_copy
    targets = [f"results/tables/ei_table{k}.csv" for k in (3, 7, 8, 4, 6)]
    _build(project, *targets)
    t3 = pd.read_csv(project / targets[0])
    assert set(t3["method"]) == {"unimodal_mor", "concat", "unimodel", "ei"}
    assert {"AP_normal", "AP_drusen", "AP_fluid", "AP_drusen_fluid", "mAP"} <= set(t3.columns)
    assert set(t3.loc[t3["method"] == "unimodal_mor", "modality"]) == {"fundus", "oct"}
    t7 = pd.read_csv(project / targets[1])
    assert set(t7["method"]) == {"lora", "mor"} and (t7["trainable_params"] > 0).all()
    t8 = pd.read_csv(project / targets[2])
    assert set(t8["method"]) == {"ei_lora", "ei_mor"}
    t4, t6 = pd.read_csv(project / targets[3]), pd.read_csv(project / targets[4])
    assert list(zip(t4["knob"], t4["value"].astype(float), t4["default"], strict=True)) == [
        ("int_layer", 2.0, True), ("insert_layer", 0.0, True), ("insert_layer", 1.0, False)]
    assert list(zip(t6["knob"], t6["value"], t6["default"], strict=True)) == [
        ("lambda_aa", 0.3, True), ("lambda_aa", 0.0, False), ("lambda_ag", 0.1, True)]
    base = t4["default"] & (t4["knob"] == "insert_layer")
    assert t4.loc[base, "mAP"].item() == t6.loc[t6["default"] & (t6["knob"] == "lambda_aa"), "mAP"].item()


def test_generation_tables_are_their_own_targets(built_copy):
    project = built_copy
    _build(project, *(f"results/tables/vap_{name}.csv" for name in ("table1", "table2", "gaps")))
    t1, t2 = (pd.read_csv(project / f"results/tables/vap_table{n}.csv") for n in (1, 2))
    assert set(t1["generator"]) == {"class", "vap", "gan"} and set(t1["modality"]) == {"fundus", "oct"}
    assert {"FD_densenet121", "IS_densenet121", "precision_densenet121", "recall_densenet121"} <= set(t1.columns)
    assert "FID" not in t1.columns  # classifier features are never called FID
    assert {"CAS", "real_acc", "CAS_ratio", "adherence", "adherence_real", "adherence_lesion_count"} <= set(t1.columns)
    assert t1["CAS"].between(0, 1).all() and t1["real_acc"].between(0, 1).all()
    assert t1["recall_densenet121"].between(0, 1).all() and (t1["FD_densenet121"] >= 0).all()
    for column in ("FD_densenet121", "IS_densenet121", "precision_densenet121", "recall_densenet121"):
        assert (t1[f"{column}_ci_low"] <= t1[f"{column}_ci_high"]).all()  # every cell its own interval
    assert len(t2) == len(t1)
    gaps = pd.read_csv(project / "results/tables/vap_gaps.csv")
    assert set(gaps["a"]) == {"class"} and set(gaps["b"]) == {"vap"}  # vap_nopcm is not among TINY's variants
    assert {"CAS", "adherence"} <= set(gaps["metric"])
    feats = gaps[gaps["metric"].str.endswith("_densenet121")]  # a correlation's gap may sit outside its percentiles
    assert (feats["ci_low"] <= feats["gap_b_minus_a"]).all() and (feats["gap_b_minus_a"] <= feats["ci_high"]).all()
    assert (project / "models/generators/synth_mm/gan/ratio_1.0/seed0/oct.safetensors").is_file()


def test_hica_tables_are_their_own_targets(built_copy):
    project = built_copy
    hica = [f"results/tables/hica_table{n}.csv" for n in (1, 2, 6, 4, 5)]
    _build(project, *hica, "results/plots/hica/synth_mm_explanations.png")
    h1, h2, h6, h4, h5 = (pd.read_csv(project / path) for path in hica)
    assert list(h1["method"].unique()) == ["zeroshot", "cnn", "transfer", "hica"] and set(h1["subset"]) == {"shot_1"}
    assert h1.loc[h1["method"] == "hica", "gap"].isna().all() and h1["value"].between(0, 1).all()
    assert set(h2["method"]) == {"hica", "hica_no_local"}  # TINY's hica.ablations
    assert (project / "models/hica_pretrain/synth_mm/seed0/text/config.json").is_file()
    assert list(h6["method"]) == ["zeroshot", "cnn", "transfer", "hica"] and (h6["inference_images_per_s"] > 0).all()
    assert set(h4["method"]) == {"zeroshot", "hica_unseen"} and set(h4["unseen_classes"]) == {"drusen_fluid"}
    assert set(h5["method"]) == {"hica", "hica_noise_replace"}
    assert (project / "results/plots/hica/synth_mm_explanations.png").stat().st_size > 10_000


def test_report_holds_the_tables_plots_grids_and_versions(built_copy):
    project = built_copy
    run(["snakemake", "--report", "results/report.html"], project)
    html = (project / "results" / "report.html").read_text()
    for item in ("table3.csv", "table3_gaps.csv", "table3.png", "vap.png", "software_versions.csv",
                 "Synthetic images", "Provenance", "seed-paired"):
        assert item in html, item
