"""The dvc.yaml → Snakemake bridge: resolve DVC's stages (foreach/matrix expanded) into plain rule specs.

Uses DVC's parser (``dvc.parsing.DataResolver``), an internal API: dvc is pinned to one minor version and
tests/test_pipeline.py fails loudly if this bridge breaks. Mapping:
deps → input, outs + metrics + plots → output (except ``persist: true`` outputs — resumable checkpoints, which
Snakemake would delete before rerunning the rule), params → rule params (a changed value reruns the rule),
cmd → ``params.cmd``, ``meta: {threads, resources, priority, size, nice}`` → Snakemake threads, resources and
priority (``size`` orders a matrix's jobs of equal priority), and a ``nice`` prefix on the command (off the critical
path: yields the CPU to prioritised stages).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medrepro.config import safe_load_yaml

log = logging.getLogger("medrepro.dvc_bridge")

#: outputs with these suffixes are files; any other output path is a directory (``directory()`` in Snakemake).
FILE_SUFFIXES = {".json", ".csv", ".md", ".png", ".parquet", ".safetensors", ".yaml", ".yml", ".txt", ".npy",
                 ".pt", ".svg", ".html", ".tsv"}


@dataclass
class StageSpec:
    name: str  # DVC address, e.g. ``downstream@synth_mm-densenet121-0.01``
    cmd: str
    deps: list[str]
    outs: list[str]
    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    persist: list[str] = field(default_factory=list)  # DVC outputs kept across reruns (not Snakemake outputs)

    @property
    def rule(self) -> str:
        """A Snakemake-safe rule name derived from the DVC address."""
        return rule_name(self.name)


def rule_name(stage: str) -> str:
    return re.sub(r"\W", "_", stage.replace("@", "__").replace("+", "_plus_").replace(".", "p"))


def is_dir_output(path: str) -> bool:
    return Path(path).suffix not in FILE_SUFFIXES


def _paths(entries: list[Any] | None, persist: bool = False) -> list[str]:
    """Paths of a stage's outs/metrics/plots entries: the non-persistent ones, or with ``persist`` the others."""
    out = []
    for e in entries or []:
        if isinstance(e, Mapping):
            out.extend(k for k, opts in e.items() if bool((opts or {}).get("persist", False)) == persist)
        elif not persist:
            out.append(e)
    return [str(p) for p in out]


def lookup(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


def resolve_stages(root: str | Path = ".", params: Mapping[str, Any] | None = None) -> list[StageSpec]:
    """All resolved stages of ``root/dvc.yaml``; ``params`` (merged overrides) replaces params.yaml if given."""
    from dvc.parsing import DataResolver
    from dvc.parsing.context import Context
    from dvc.repo import Repo

    root = Path(root).resolve()
    dvc_yaml = safe_load_yaml((root / "dvc.yaml").read_text())
    values = dict(params) if params is not None else safe_load_yaml((root / "params.yaml").read_text())
    with Repo(str(root)) as repo:
        resolver = DataResolver(repo, str(root), dvc_yaml)
        if params is not None:
            ctx = Context(values)
            resolver.context = ctx
            for definition in resolver.definitions.values():
                definition.context = ctx
        resolved = resolver.resolve()["stages"]
    specs = []
    for name, st in resolved.items():
        keys: list[str] = []
        for p in st.get("params", []):
            keys.extend([p] if isinstance(p, str) else [k for v in p.values() for k in v])
        specs.append(StageSpec(
            name=name,
            cmd=" ".join(str(st["cmd"]).split()),
            deps=[str(d) for d in st.get("deps", [])],
            outs=_paths(st.get("outs")) + _paths(st.get("metrics")) + _paths(st.get("plots")),
            params={k: lookup(values, k) for k in keys},
            meta=dict(st.get("meta") or {}),
            persist=_paths(st.get("outs"), persist=True),
        ))
    return expand_source_folders(link_deps(specs), root)


def expand_source_folders(specs: list[StageSpec], root: Path) -> list[StageSpec]:
    """Give every dep folder that no stage writes (source code) the files inside it as extra deps.

    Snakemake compares a folder input by the folder's own mtime, which editing a file inside does not change, while
    DVC hashes the folder's contents: without the files, `snakemake` would call a stage up to date that `dvc status`
    calls changed. ``__pycache__`` is left out (Python rewrites it while stages run).
    """
    outs = {o for s in specs for o in s.outs}
    for spec in specs:
        deps: list[str] = []
        for dep in spec.deps:
            deps.append(dep)
            folder = root / dep
            if dep not in outs and folder.is_dir():
                deps.extend(sorted(p.relative_to(root).as_posix() for p in folder.rglob("*")
                                   if p.is_file() and "__pycache__" not in p.parts))
        spec.deps = list(dict.fromkeys(deps))
    return specs


def link_deps(specs: list[StageSpec]) -> list[StageSpec]:
    """Make every dep name a path Snakemake can match against another rule's output.

    A dep that is a parent folder of other stages' outputs (table3 ← results/metrics/downstream) becomes those
    outputs; a dep inside another stage's directory output becomes that directory.
    """
    outs = [o for s in specs for o in s.outs]
    below: dict[PurePosixPath, list[str]] = {}  # folder → the outputs inside it, in stage order
    dir_outs: dict[PurePosixPath, list[str]] = {}  # directory output → its spellings, in stage order
    for o in outs:  # one pass over the parents of each output (a pairwise scan took ~17 s per resolve)
        path = PurePosixPath(o)
        for parent in path.parents:
            below.setdefault(parent, []).append(o)
        if is_dir_output(o):
            dir_outs.setdefault(path, []).append(o)
    order = {o: k for k, o in reversed(list(enumerate(outs)))}
    for spec in specs:
        linked: list[str] = []
        for dep in spec.deps:
            path = PurePosixPath(dep)
            inner = below.get(path, [])
            outer = sorted((o for p in path.parents for o in dir_outs.get(p, [])), key=order.__getitem__)
            linked.extend(inner or outer or [dep])
        spec.deps = list(dict.fromkeys(linked))
    return specs


def _tree_mtimes(paths: list[str], root: Path) -> dict[Path, tuple[int, int]]:
    """(atime, mtime) in ns of every output path, and of every file and folder inside directory outputs."""
    stamps: dict[Path, tuple[int, int]] = {}
    for rel in paths:
        top = root / rel
        for p in [top, *(top.rglob("*") if top.is_dir() else [])]:
            if p.exists():
                st = p.stat()
                stamps[p] = (st.st_atime_ns, st.st_mtime_ns)
    return stamps


def dvc_commit_keeping_mtimes(specs: list[StageSpec], root: str | Path = ".") -> int:
    """``dvc commit -f`` the completed stages, then restore every output's mtime.

    DVC moves cached outputs into its cache and links them back, which gives them new mtimes; Snakemake would
    then see inputs newer than outputs and rerun downstream rules. Restoring the mtimes keeps both tools content.
    """
    root = Path(root)
    for spec in specs:  # a persistent output (checkpoint folder) may be absent after a run that needed none
        for rel in spec.persist:
            (root / rel).mkdir(parents=True, exist_ok=True)
    done = [s for s in specs if all((root / o).exists() for o in s.outs)]
    if not done:
        return 0
    stamps = _tree_mtimes([o for s in done for o in s.outs], root)
    try:
        code = _dvc_commit_force([s.name for s in done], root)
    finally:
        for path in sorted(stamps, key=lambda p: len(p.parts), reverse=True):  # children first, folders last
            if path.exists():
                os.utime(path, ns=stamps[path], follow_symlinks=False)
    return code


@contextmanager
def _inputs_read_once() -> Iterator[None]:
    """Within one commit, parse each params file and hash each dependency path once.

    DVC re-reads params.yaml (ruamel, ≈ 0.3 s) for every params dep of every stage, and re-hashes a shared dep folder
    (data/prepared/<dataset>: 3,000 files) for every stage that reads it, each twice (the dep's hash, then the run
    cache's check): make run's DAG has ≈ 80 parses and 220,000 file lookups. Nothing changes them during a commit;
    each caller gets its own copy of the parsed values.
    """
    from dvc.dependency import param
    from dvc.dependency.base import Dependency

    load_path, hash_meta = param.load_path, Dependency._get_hash_meta
    parsed: dict[tuple[str, str], Any] = {}
    hashed: dict[tuple[str, str, bool], Any] = {}

    def load_once(path: str, fs: Any, **kwargs: Any) -> Any:
        key = (str(path), repr(sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = load_path(path, fs, **kwargs)
        return copy.deepcopy(parsed[key])

    def hash_once(dep: Dependency) -> Any:
        key = (str(dep.fs_path), str(dep.hash_name), bool(dep.use_cache))
        if key not in hashed:
            hashed[key] = hash_meta(dep)
        return hashed[key]

    param.load_path, Dependency._get_hash_meta = load_once, hash_once
    try:
        yield
    finally:
        param.load_path, Dependency._get_hash_meta = load_path, hash_meta


def _dvc_commit_force(names: list[str], root: Path) -> int:
    """``dvc commit -f NAME…`` in one pass: dvc.yaml and dvc.lock are parsed once and dvc.lock written once.

    The CLI re-reads and rewrites dvc.lock for every target (≈ 3 s each here). Same steps as
    ``dvc.repo.commit.commit`` with ``force=True`` (internal API, pinned; tests/test_e2e.py checks the result).
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    wanted = set(names)
    try:
        with Repo(str(root)) as repo, repo.lock, _inputs_read_once():
            stages = [st for st in repo.index.stages if st.addressing in wanted]
            missing = wanted - {st.addressing for st in stages}
            if missing:
                raise DvcException(f"dvc.yaml has no stages {sorted(missing)}")
            for stage in stages:
                stage.save()
                stage.commit(relink=True)
            for path, dvcfile in {st.dvcfile.path: st.dvcfile for st in stages}.items():
                dvcfile.dump_stages([st for st in stages if st.dvcfile.path == path], update_pipeline=False)
    except DvcException as exc:
        log.error("dvc commit failed: %s", exc)
        return 1
    return 0


#: ``snakemake --report``: the outputs shown, by path pattern → (caption under workflow/report/, category)
REPORT_ITEMS = {
    "results/table3.csv": ("table3.rst", "Table 3 (VAP-Diffusion)"),
    "results/tables/table3_gaps.csv": ("table3_gaps.rst", "Table 3 (VAP-Diffusion)"),
    "results/plots/table3.png": ("table3_plot.rst", "Table 3 (VAP-Diffusion)"),
    "results/plots/synthetic/*.png": ("synthetic_grid.rst", "Synthetic images"),
    "results/software_versions.csv": ("software.rst", "Provenance"),
    "results/tables/ei_table*.csv": ("ei_tables.rst", "EI tables"),
    "results/tables/vap_*.csv": ("vap_tables.rst", "VAP-Diffusion tables"),
    "results/tables/hica_table*.csv": ("hica.rst", "HiCA"),
    "results/plots/hica/*.png": ("hica.rst", "HiCA"),
}


def report_item(path: str) -> dict[str, str] | None:
    """``report()`` arguments (caption relative to workflow/rules/, category) of an output shown in the report."""
    import fnmatch

    for pattern, (caption, category) in REPORT_ITEMS.items():
        if fnmatch.fnmatch(path, pattern):
            return {"caption": f"../report/{caption}", "category": category}
    return None


def rule_resources(meta: Mapping[str, Any], device: str | None) -> dict[str, Any]:
    """A stage's Snakemake resources; ``gpu`` only when the params let it use one (``device: cpu`` needs none)."""
    res = dict(meta.get("resources", {}))
    if device == "cpu":
        res.pop("gpu", None)
    return res


def rule_priority(meta: Mapping[str, Any]) -> float:
    """Snakemake priority: ``meta.priority`` plus ``meta.size`` in [0, 1] (a job's relative amount of work, e.g. its
    real ratio), so that among ready jobs of one priority the largest starts first (longest-job-first packing: the
    ratio-1.0 runs do not end up alone at the end of a run)."""
    size = float(meta.get("size", 0.0))
    if not 0.0 <= size <= 1.0:
        raise ValueError(f"dvc.yaml meta.size must lie in [0, 1] (it orders jobs within one priority), got {size}")
    return float(meta.get("priority", 0)) + size


def shell_template(meta: Mapping[str, Any], mark_done: bool) -> str:
    """A rule's shell: the stage command with the rule's threads, logged; ``nice -n N`` first if ``meta`` sets
    ``nice: N``. On success, with ``mark_done`` a marker in ``params.ran_dir`` (see ``commit_stages_that_ran``);
    without (override runs, whose outputs do not match params.yaml) any earlier marker of the rule is removed."""
    nice = int(meta.get("nice", 0))
    parts = [f"nice -n {nice}"] if nice else []
    parts.append("{params.cmd} --threads {threads} > {log} 2>&1")
    if mark_done:
        parts.append("&& mkdir -p {params.ran_dir} && touch {params.ran_dir}/{params.rule}")
    else:
        parts.append("&& rm -f {params.ran_dir}/{params.rule}")
    return " ".join(parts)


def commit_stages_that_ran(specs: list[StageSpec], ran_dir: str | Path, root: str | Path = ".") -> int:
    """Record in dvc.lock the stages that left a marker in ``ran_dir`` (one per completed rule), then clear them.

    Only these: committing every stage whose outputs exist would mark a stage DVC rightly sees as stale (its code
    changed, Snakemake was not asked for it) as up to date. Markers stay if ``dvc commit`` fails.
    """
    ran_dir = Path(root) / ran_dir
    markers = {p.name: p for p in ran_dir.glob("*")} if ran_dir.is_dir() else {}
    ran = [s for s in specs if s.rule in markers]
    if not ran:
        return 0
    code = dvc_commit_keeping_mtimes(ran, root)
    if code == 0:
        for spec in ran:
            markers[spec.rule].unlink(missing_ok=True)
    return code
