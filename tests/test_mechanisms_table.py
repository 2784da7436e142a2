"""The `mechanisms` experiment's table (medrepro.report.mechanisms): a verdict that follows the seeds' intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import config, write_predictions

from medrepro import layout
from medrepro.hica.methods import METHOD, method_name
from medrepro.report.mechanisms import CONTROL, contrasts, mechanisms_table, moved

D = "synth_mm"


def _unimodal(path, y, skills, rng):
    frames = [f.assign(modality=m) for m, skill in zip(("fundus", "oct"), skills, strict=True)
              for f in write_predictions(path, y, skill, (0, 1, 2), rng)]
    pd.concat(frames).to_parquet(path, index=False)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Fabricated runs: LoRA and MoR far above the probe on fundus only; EI needs [INT] but not L_aa; HiCA's
    local term moves on one seed of three."""
    monkeypatch.chdir(tmp_path)
    cfg = config({"seeds": [0, 1, 2], "report": {"n_boot": 60},
                  "ei": {"table7_methods": ["linear_probe", "lora"], "table8_methods": ["linear_probe"],
                         "ablations": ["intervention-false", "lambda_aa-0.0", "insert_layer-1", "lambda_aa-0.303"]},
                  "hica": {"ablations": ["no_local"], "ablation_subsets": ["shot_5"]},
                  "diffusion": {"variants": ["vap_nopcm", "vap", "vap_shuffled"]},
                  "synthesis": {"generators": ["vap", "class_mean"], "ratios": [0.1],
                                "generator_data": {"variant": "vap", "ratios": []}},
                  "downstream": {"methods": ["densenet121"]},
                  "generation_metrics": {"generators": ["vap", "vap_nopcm", "vap_shuffled"]}})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    _unimodal(layout.peft(D, "linear_probe").predictions, y, (0.3, 1.0), rng)
    _unimodal(layout.peft(D, "lora").predictions, y, (2.5, 1.0), rng)
    _unimodal(layout.preadapt(D, "mor", 1.0).predictions, y, (2.5, 1.0), rng)
    full = write_predictions(layout.ei(D, 1.0).predictions, y, 3.0, (0, 1, 2), rng)
    write_predictions(layout.ei_ablation(D, "intervention-false").predictions, y, 1.0, (0, 1, 2), rng)
    write_predictions(layout.ei_ablation(D, "lambda_aa-0.303").predictions, y, 3.0, (0, 1, 2), rng)
    write_predictions(layout.ei_peft(D, "linear_probe").predictions, y, 1.0, (0, 1, 2), rng)
    # lambda_aa = 0: the very same scores as EI (the mutation changes nothing)
    path = layout.ei_ablation(D, "lambda_aa-0.0").predictions
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(full).to_parquet(path, index=False)
    hica = write_predictions(layout.hica(D, METHOD, "shot_5").predictions, y, 2.0, (0, 1, 2), rng)
    local = [f.copy() for f in hica]
    local[0] = write_predictions(layout.hica(D, "tmp", "shot_5").predictions, y, 0.3, (0,), rng)[0]
    path = layout.hica(D, method_name("no_local"), "shot_5").predictions
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(local).to_parquet(path, index=False)
    # MoR with its LoRA up-projections zeroed: the frozen tower's level on fundus, unchanged on OCT
    _unimodal(layout.lora_zeroed(D, "mor"), y, (0.3, 1.0), rng)
    write_predictions(layout.downstream(D, "densenet121", "real+syn_vap", 0.1).predictions, y, 1.0, (0, 1, 2), rng)
    write_predictions(layout.downstream(D, "densenet121", "real+syn_class_mean", 0.1).predictions, y, 1.0, (0, 1, 2),
                      rng)
    _generation_eval(*layout.generation_eval(D))
    return cfg


def _generation_eval(rows_path, gaps_path):
    """vap_eval's files for two modalities: captions move adherence on fundus (3 seeds), PCM moves nothing."""
    rows, gaps = [], []
    for m in ("fundus", "oct"):
        for seed in (0, 1, 2, None):
            for g, adherence, cas in (("vap", 0.8, 0.6), ("vap_shuffled", 0.6 if m == "fundus" else 0.8, 0.6),
                                      ("vap_nopcm", 0.8, 0.6)):
                rows.append({"modality": m, "bank": "train", "seed": seed, "generator": g, "adherence": adherence,
                             "CAS": cas, "FD_densenet121": 10.0})
            for a, metric, gap, low, high in (
                    ("vap_shuffled", "adherence", *((0.2, 0.15, 0.25) if m == "fundus" else (0.0, -0.05, 0.05))),
                    ("vap_nopcm", "CAS", 0.0, -0.04, 0.04), ("vap_nopcm", "FD_densenet121", 0.0, -1.0, 1.0),
                    ("vap_nopcm", "adherence", 0.0, -0.05, 0.05)):
                gaps.append({"modality": m, "bank": "train", "seed": seed, "metric": metric, "a": a, "b": "vap",
                             "gap_b_minus_a": gap, "ci_low": low, "ci_high": high})
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).astype({"seed": "Int64"}).to_parquet(rows_path, index=False)
    pd.DataFrame(gaps).astype({"seed": "Int64"}).to_parquet(gaps_path, index=False)


def test_each_mutation_gets_a_seed_paired_gap_and_a_verdict(runs):
    table = mechanisms_table(runs).set_index(["mechanism", "modality", "subset"])
    # (lora, mor, mor zeroed) × 2 modalities, 3 EI contrasts and the control, 1 HiCA, VAP: captions and PCM (CAS,
    # FD) × 2 modalities, 1 class-mean contrast
    assert len(table) == 3 * 2 + 4 + 1 + 3 * 2 + 1
    assert "insert_layer-1" not in " ".join(table["mutation"])  # not a mechanism's removal
    lora_f, lora_o = table.loc[("PEFT lora", "fundus", "")], table.loc[("PEFT lora", "oct", "")]
    assert lora_f["verdict"] == "moves" and lora_f["seeds_moved"] == 3 and lora_f["ci_low"] > 0
    assert lora_o["verdict"] == "level" and lora_o["ci_low"] < 0 < lora_o["ci_high"]
    assert lora_f["gap"] == pytest.approx(lora_f["with"] - lora_f["without"])
    assert table.loc[("[INT] tokens (Eq. 1-2)", "all", "")]["verdict"] == "moves"
    same = table.loc[("auxiliary loss L_aa (Eq. 6)", "all", "")]
    assert same["gap"] == 0 and same["seeds_moved"] == 0 and same["verdict"] == "level"
    local = table.loc[("local ROI alignment (Eq. 4)", "all", "shot_5")]
    assert local["seeds_moved"] == 1 and local["verdict"] == "level" and local["metric"] == "mAUC"
    assert len(local["seed_gaps"].split("] ")) == 3
    control = table.loc[(CONTROL, "all", "")]
    assert control["mutation"] == "lambda_aa = 0.303 (default 0.3)" and control["verdict"] == "level"
    assert np.isnan(control["seeds_beyond_control"])
    assert table.loc[("[INT] tokens (Eq. 1-2)", "all", "")]["seeds_beyond_control"] == 3  # far beyond retraining
    assert same["seeds_beyond_control"] == 0  # a gap of 0 is never beyond it
    assert np.isnan(table.loc[("local ROI alignment (Eq. 4)", "all", "shot_5")]["seeds_beyond_control"])  # no control
    zeroed = table.loc[("PEFT mor (pre-adaptation)", "fundus", "")]
    zeroed = zeroed[zeroed["mutation"] == "adapters zeroed at test time"].iloc[0]
    assert zeroed["verdict"] == "moves" and zeroed["direction"] == "with > without"
    captions = table.loc[("caption conditioning t_mix (Sec. 2.2)", "fundus", "train bank")]
    assert captions["verdict"] == "moves" and captions["metric"] == "adherence"
    assert captions["with"] == pytest.approx(0.8) and captions["without"] == pytest.approx(0.6)
    assert table.loc[("caption conditioning t_mix (Sec. 2.2)", "oct", "train bank")]["verdict"] == "level"
    pcm = table.loc[("prototype condition mechanism PCM (Sec. 2.4)", "fundus", "train bank")]
    assert sorted(pcm["metric"]) == ["CAS", "FD_densenet121"] and set(pcm["verdict"]) == {"level"}
    mean = table.loc[("synthetic images of vap (Sec. 2.3)", "all", "densenet121 at 0.1")]
    assert mean["mutation"] == "class-mean images" and mean["seeds"] == 3


def test_the_experiment_targets_every_run_a_contrast_reads(runs):
    paths = {str(p) for c in contrasts(runs, modalities=False) for p in (c.with_path, c.without_path)}
    assert str(layout.ei_ablation(D, "intervention-false").predictions) in paths
    assert str(layout.peft(D, "linear_probe").predictions) in paths
    assert str(layout.lora_zeroed(D, "mor")) in paths
    assert str(layout.generation_eval(D)[1]) in paths
    assert str(layout.downstream(D, "densenet121", "real+syn_class_mean", 0.1).predictions) in paths
    assert moved(0.1, 0.2) and moved(-0.2, -0.1) and not moved(-0.1, 0.1)
    assert moved(0.1, 0.2, sign=1) and not moved(0.1, 0.2, sign=-1) and not moved(-0.2, -0.1, sign=1)


def test_the_results_page_gives_each_mechanism_its_verdict_and_protocol(runs):
    from medrepro.report.results_page import mechanisms_section

    table = mechanisms_table(runs)
    text = "\n".join(mechanisms_section(table))
    assert "Protocol: the named experiment `mechanisms`" in text
    assert "EI [INT] tokens (Eq. 1-2) (synth_mm) against EI without [INT]: **moves** (with > without)" in text
    assert ("HiCA local ROI alignment (Eq. 4) (synth_mm, shot_5) against HiCA no_local: **level** (with > without)"
            in text)
    assert text.count("**moves**") + text.count("**level**") == len(table)
