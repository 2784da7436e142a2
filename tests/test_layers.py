"""The house stays in layers: no import cycle, no import from a lower floor to a higher one, and every stage's
dvc.yaml deps cover the code it runs (so that DVC and Snakemake rerun it when that code changes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medrepro.source import ROOT, closure, imports_of, module_file

#: floors from the ground up; a module may import its own package and anything on a lower floor, nothing else
FLOORS = [("errors", "progress"), ("io", "registry", "devices", "source", "layout"), ("data",),
          ("config", "captions"), ("metrics",), ("models",), ("train",), ("ei", "vap", "hica"), ("report",),
          ("experiments", "compare", "dvc_bridge", "recover"), ("stages",)]
FLOOR = {name: k for k, names in enumerate(FLOORS) for name in names}
#: code folders whose files a stage's deps must cover (the ground floors are left out: every stage reads them)
COVERED = ("ei", "vap", "hica", "models", "train", "metrics", "report", "captions", "stages")


def _modules() -> dict[str, Path]:
    return {".".join(("medrepro", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in ROOT.rglob("*.py")}


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    return {m: {t for t in imports_of(p) if t in mods and t != m} for m, p in mods.items()}


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_module_has_a_floor():
    assert {_room(m) for m in _modules()} - {""} <= set(FLOOR)


def test_no_import_runs_up_or_across_a_floor():
    wrong = [f"{a} -> {b}" for a, targets in _edges(_modules()).items() for b in targets
             if _room(a) and _room(b) and _room(a) != _room(b)
             and FLOOR[_room(b)] >= FLOOR[_room(a)]]
    assert not wrong, wrong


def test_no_import_cycle():
    edges, seen, done, cycles = _edges(_modules()), set(), set(), []

    def visit(m: str, path: list[str]) -> None:
        seen.add(m)
        for t in sorted(edges[m]):
            if t in path:
                cycles.append(path[path.index(t):] + [t])
            elif t not in seen:
                visit(t, path + [t])
        done.add(m)

    for m in sorted(edges):
        if m not in seen:
            visit(m, [m])
    assert not cycles, cycles[:3]


@pytest.mark.parametrize("module", ["medrepro.stages.train_diffusion", "medrepro.stages.synthesize"])
def test_the_closure_follows_lazy_imports(module):
    files = {f.relative_to(ROOT).as_posix() for f in closure(module)}
    assert module_file(module).relative_to(ROOT).as_posix() in files
    if module.endswith("synthesize"):  # generate_any imports the GAN and class-mean samplers inside the function
        assert {"vap/gan_runs.py", "vap/class_mean.py"} <= files


def test_each_stage_depends_on_the_code_it_runs():
    from medrepro.dvc_bridge import resolve_stages

    missing = {}
    for stage in resolve_stages():
        found = re.search(r"-m (medrepro\.stages\.\w+)", stage.cmd)
        assert found, f"{stage.name}: its cmd runs no medrepro stage module"
        deps = [Path(d) for d in stage.deps]
        for f in closure(found.group(1)):
            rel = Path("src/medrepro") / f.relative_to(ROOT)
            if rel.parts[2] not in COVERED or rel.name in ("__init__.py", "_cli.py"):
                continue
            if not any(rel == d or d in rel.parents for d in deps):
                missing.setdefault(stage.name.split("@")[0], []).append(str(rel))
    assert not missing, missing


def test_the_project_cites_the_papers_not_the_developers_notes():
    """Code and docs name a paper's section, the authors' code or the project's own docs, never the notes the
    project was built from."""
    import subprocess

    repo = ROOT.parents[1]
    names = [n + ".md" for n in ("DESIGN", "UPSTREAM", "DATASETS", "STYLE")]
    files = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    cited = [f for f in files if not f.startswith(("results/", "experiments/")) and (repo / f).is_file()
             and any(n in (repo / f).read_text(errors="ignore") for n in names)]
    assert not cited, cited


def test_bench_scripts_import_modules_that_exist():
    """The bench scripts are not run by the suite; a module they import must still exist after a move."""
    missing = [f"{path.name}: {name}" for path in sorted((ROOT.parents[1] / "bench").glob("*.py"))
               for name in imports_of(path)
               if module_file(name) is None and module_file(name.rpartition(".")[0]) is None]
    assert not missing, missing
