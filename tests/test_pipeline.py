"""The dvc.yaml → Snakemake bridge: same stages, same edges, lint-clean (fails loudly if DVC internals move)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT, root_stages, run

from medrepro.dvc_bridge import resolve_stages, rule_name


def dvc_stage_names(root: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.addressing for s in repo.index.stages}


@pytest.mark.e2e
def test_rule_set_equals_stage_set():
    stages = {s.name for s in root_stages()}
    assert stages == dvc_stage_names(ROOT)
    rules = set(run(["snakemake", "--list-rules"], ROOT).stdout.split())
    assert rules - {"all"} == {rule_name(s) for s in stages}


def _dot_edges(dot: str) -> set[tuple[str, str]]:
    labels = dict(re.findall(r'^\s*(\S+)\s*\[.*?label\s*=\s*"?([^",\]]+)"?', dot, flags=re.M))
    edges = set()
    for a, b in re.findall(r'^\s*"?([^"\s]+)"?\s*->\s*"?([^"\s;]+)"?', dot, flags=re.M):
        edges.add((labels.get(a, a).strip('"'), labels.get(b, b).strip('"')))
    return edges


@pytest.mark.e2e
def test_rulegraph_edges_equal_dvc_dag_edges():
    dvc_edges = {(rule_name(a), rule_name(b)) for a, b in _dot_edges(run(["dvc", "dag", "--dot"], ROOT).stdout)}
    targets = [o for s in root_stages() for o in s.outs]  # every stage, not only table3's ancestors
    smk = run(["snakemake", "--rulegraph", "dot", "--", *targets], ROOT).stdout
    smk_edges = {(a, b) for a, b in _dot_edges(smk) if "all" not in (a, b)}
    assert dvc_edges, "dvc dag --dot gave no edges"
    assert smk_edges == dvc_edges


@pytest.mark.e2e
def test_snakemake_lint_passes():
    res = run(["snakemake", "--lint"], ROOT, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_param_values_are_rule_params():
    by_name = {s.name: s for s in root_stages()}
    st = by_name["split@synth_mm"]
    assert st.params["splits"]["ratios"] == [0.01, 0.1, 1.0]
    assert "data/prepared/synth_mm" in st.deps


def test_source_folder_deps_list_their_files():
    """Snakemake sees an edit inside a source folder (DVC hashes its contents; Snakemake compares mtimes)."""
    by_name = {s.name: s for s in root_stages()}
    table3 = by_name["table3"].deps
    assert "src/medrepro/report" in table3 and "src/medrepro/report/table3.py" in table3
    assert not any("__pycache__" in d for d in table3)
    prepared = by_name["split@synth_mm"].deps  # a folder another stage writes stays one input
    assert not any(d.startswith("data/prepared/synth_mm/") for d in prepared)


def test_ei_stages_track_every_ei_key_the_training_reads():
    from medrepro.config import EIConfig

    EI_KNOBS = EIConfig.KNOBS

    by_name = {s.name: s for s in root_stages()}
    for name in ("train_ei@synth_mm-1.0", "ei_peft@synth_mm-lora", "ei_ablation@synth_mm-insert_layer-1"):
        assert {f"ei.{k}" for k in EI_KNOBS} <= set(by_name[name].params), name  # dvc.yaml lists them by hand
    assert {"ei.vfm", "ei.adapter", "ei.baselines.concat"} <= set(by_name["fusion@synth_mm-concat"].params)


def test_override_params_change_the_stage_set():
    import yaml

    from medrepro.config import deep_merge

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = deep_merge(base, {"datasets": ["synth_mm", "derm7pt"]})
    names = {s.name for s in resolve_stages(ROOT, merged)}
    assert "prepare@derm7pt" in names and "prepare@synth_mm" in names


def test_nice_and_priorities_come_from_meta():
    from medrepro.dvc_bridge import rule_priority, shell_template

    stages = {s.name: s for s in root_stages()}
    assert shell_template({"nice": 10}, mark_done=False).startswith("nice -n 10 {params.cmd}")
    assert shell_template({}, mark_done=True).startswith("{params.cmd} --threads {threads} > {log} 2>&1 && ")
    assert shell_template({}, mark_done=False).endswith("&& rm -f {params.ran_dir}/{params.rule}")  # override run
    # make run's critical path (vfm → preadapt → train_ei) is prioritised; table3's other trainings yield the CPU
    assert stages["vfm"].meta["priority"] > 0 and stages["train_ei@synth_mm-1.0"].meta["priority"] > 0
    assert stages["downstream@synth_mm-densenet121-1.0"].meta["nice"] > 0
    # within one priority the larger real ratio starts first (its run is the longest)
    prio = {name: rule_priority(s.meta) for name, s in stages.items()}
    assert prio["train_ei@synth_mm-1.0"] > prio["train_ei@synth_mm-0.1"]
    assert prio["train_ei@synth_mm-0.01"] > prio["downstream@synth_mm-maxvit-1.0"]  # never past a higher priority
    with pytest.raises(ValueError, match="meta.size"):
        rule_priority({"priority": 1, "size": 5})


def test_only_stages_that_ran_are_committed(tmp_path, monkeypatch):
    from medrepro import dvc_bridge
    from medrepro.dvc_bridge import StageSpec, commit_stages_that_ran

    specs = [StageSpec(n, "true", [], [f"{n}.json"], {}) for n in ("a", "b", "c")]
    for s in specs:
        (tmp_path / s.outs[0]).write_text("{}")
    ran = tmp_path / "ran"
    ran.mkdir()
    (ran / "a").touch()
    (ran / "c").touch()
    committed: list[list[str]] = []
    codes = iter([1, 0])
    monkeypatch.setattr(dvc_bridge, "dvc_commit_keeping_mtimes",
                        lambda done, root: committed.append([s.name for s in done]) or next(codes))
    assert commit_stages_that_ran(specs, "ran", tmp_path) == 1  # dvc failed: the markers stay for the next run
    assert sorted(p.name for p in ran.iterdir()) == ["a", "c"]
    assert commit_stages_that_ran(specs, "ran", tmp_path) == 0
    assert committed == [["a", "c"], ["a", "c"]] and not list(ran.iterdir())
    assert commit_stages_that_ran(specs, "ran", tmp_path) == 0 and len(committed) == 2  # nothing ran: no dvc call
