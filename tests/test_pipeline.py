"""The dvc.yaml → Snakemake bridge: same stages, same edges, lint-clean (fails loudly if DVC internals move)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT, run

from medrepro.pipeline import resolve_stages, rule_name


def dvc_stage_names(root: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.addressing for s in repo.index.stages}


def test_rule_set_equals_stage_set():
    stages = {s.name for s in resolve_stages(ROOT)}
    assert stages == dvc_stage_names(ROOT)
    rules = set(run(["snakemake", "--list-rules"], ROOT).stdout.split())
    assert rules - {"all"} == {rule_name(s) for s in stages}


def _dot_edges(dot: str) -> set[tuple[str, str]]:
    labels = dict(re.findall(r'^\s*(\S+)\s*\[.*?label\s*=\s*"?([^",\]]+)"?', dot, flags=re.M))
    edges = set()
    for a, b in re.findall(r'^\s*"?([^"\s]+)"?\s*->\s*"?([^"\s;]+)"?', dot, flags=re.M):
        edges.add((labels.get(a, a).strip('"'), labels.get(b, b).strip('"')))
    return edges


def test_rulegraph_edges_equal_dvc_dag_edges():
    dvc_edges = {(rule_name(a), rule_name(b)) for a, b in _dot_edges(run(["dvc", "dag", "--dot"], ROOT).stdout)}
    targets = [o for s in resolve_stages(ROOT) for o in s.outs]  # every stage, not only table3's ancestors
    smk = run(["snakemake", "--rulegraph", "dot", "--", *targets], ROOT).stdout
    smk_edges = {(a, b) for a, b in _dot_edges(smk) if "all" not in (a, b)}
    assert dvc_edges, "dvc dag --dot gave no edges"
    assert smk_edges == dvc_edges


def test_snakemake_lint_passes():
    res = run(["snakemake", "--lint"], ROOT, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_param_values_are_rule_params():
    by_name = {s.name: s for s in resolve_stages(ROOT)}
    st = by_name["split@synth_mm"]
    assert st.params["splits"]["ratios"] == [0.01, 0.1, 1.0]
    assert "data/prepared/synth_mm" in st.deps


def test_override_params_change_the_stage_set():
    import yaml

    from medrepro.params import deep_merge

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = deep_merge(base, {"datasets": ["synth_mm", "derm7pt"]})
    names = {s.name for s in resolve_stages(ROOT, merged)}
    assert "prepare@derm7pt" in names and "prepare@synth_mm" in names
