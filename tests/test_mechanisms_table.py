"""The `mechanisms` experiment's table (medrepro.report.mechanisms): a verdict that follows the seeds' intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import config, write_predictions

from medrepro import layout
from medrepro.hica.methods import METHOD, method_name
from medrepro.report.mechanisms import contrasts, mechanisms_table, moved

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
                         "ablations": ["intervention-false", "lambda_aa-0.0", "insert_layer-1"]},
                  "hica": {"ablations": ["no_local"], "ablation_subsets": ["shot_5"]}})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    _unimodal(layout.peft(D, "linear_probe").predictions, y, (0.3, 1.0), rng)
    _unimodal(layout.peft(D, "lora").predictions, y, (2.5, 1.0), rng)
    _unimodal(layout.preadapt(D, "mor", 1.0).predictions, y, (2.5, 1.0), rng)
    full = write_predictions(layout.ei(D, 1.0).predictions, y, 3.0, (0, 1, 2), rng)
    write_predictions(layout.ei_ablation(D, "intervention-false").predictions, y, 1.0, (0, 1, 2), rng)
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
    return cfg


def test_each_mutation_gets_a_seed_paired_gap_and_a_verdict(runs):
    table = mechanisms_table(runs).set_index(["mechanism", "modality", "subset"])
    assert len(table) == 2 * 2 + 3 + 1  # (lora, mor) × 2 modalities, 3 EI contrasts, 1 HiCA
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


def test_the_experiment_targets_every_run_a_contrast_reads(runs):
    paths = {str(p) for c in contrasts(runs, modalities=False) for p in (c.with_path, c.without_path)}
    assert str(layout.ei_ablation(D, "intervention-false").predictions) in paths
    assert str(layout.peft(D, "linear_probe").predictions) in paths
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
