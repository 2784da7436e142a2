"""Named experiments: a params overlay (``config/experiments/<name>.yaml``) run as its own project.

An experiment's runs must never land in the default run's folders (nor in its dvc.lock), so each runs in
``experiments/<name>/``: a project folder whose Snakefile, dvc.yaml, params.yaml, src, workflow and config are links
to this checkout's, with a DVC repository of its own (no SCM). Snakemake runs there with the overlay as
``--configfile``, builds the experiment's targets — reusing what an earlier run of it completed — and the
experiment's tables are then computed from that folder's predictions and written to this project's
``results/tables/``. Each experiment is one DVC stage / Snakemake rule of the main pipeline (not in ``make run``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medrepro import layout
from medrepro.config import OVERRIDE_ENV, Config, load_config
from medrepro.errors import MedreproError, ParamsError

log = logging.getLogger("medrepro")

#: what an experiment's project folder links to in this checkout
LINKED = ("Snakefile", "dvc.yaml", "params.yaml", "src", "workflow", "config", "pyproject.toml")
PYTHON = os.path.abspath(sys.executable)  # absolute: the commands run in the experiment's folder


@dataclass(frozen=True)
class Experiment:
    """``targets(cfg)``: what Snakemake builds in the experiment's folder; ``tables(cfg)``: its tables, computed
    inside that folder (the working directory), written to ``outputs`` (its stage's outs) in that order."""

    name: str
    targets: Callable[[Config], list[str]]
    tables: Callable[[Config], Sequence[pd.DataFrame]]
    outputs: tuple[Path, ...]

    @property
    def overlay(self) -> Path:
        return Path("config") / "experiments" / f"{self.name}.yaml"

    @property
    def folder(self) -> Path:
        return layout.EXPERIMENTS / self.name


def _colocated_targets(cfg: Config) -> list[str]:
    ei, out = cfg.ei, []
    for d in ei.datasets:
        out += [str(layout.preadapt(d, ei.adapter, layout.FULL).predictions),
                str(layout.ei(d, layout.FULL).predictions)]
        out += [str(layout.fusion(d, m).predictions) for m in ei.table3_methods]
        out += [str(layout.ei_ablation(d, s).predictions) for s in ei.ablations]
    return out


def _ei_tables(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """EI against the unimodal towers and the fusion baselines, and its gaps (``report.ei_colocated``)."""
    from medrepro.report.ei_colocated import colocated_tables

    return colocated_tables(cfg)


def _hica_targets(cfg: Config) -> list[str]:
    return [str(layout.hica_table(k)) for k in layout.HICA_TABLES]


def _hica_tables(cfg: Config) -> list[pd.DataFrame]:
    """The pipeline's own HiCA tables, built in the experiment's folder."""
    return [pd.read_csv(layout.hica_table(k)) for k in layout.HICA_TABLES]


def _vap3_runs(cfg: Config) -> list[tuple[dict, Path]]:
    """Every downstream classifier on real and on real + each synthetic set, at every ratio of synthesis.ratios."""
    return [({"dataset": d, "method": m, "train_data": t, "real_ratio": r}, layout.downstream(d, m, t, r).predictions)
            for d in cfg.datasets for m in cfg.downstream.methods for r in cfg.synthesis.ratios
            for t in ("real", *(f"real+syn_{g}" for g in cfg.synthesis.generators))]


def _vap3_targets(cfg: Config) -> list[str]:
    return [str(path) for _, path in _vap3_runs(cfg)] + [str(layout.VAP_GAPS)]


def _vap3_tables(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    from medrepro.report.table3 import synthetic_gaps

    gaps = synthetic_gaps(_vap3_runs(cfg), cfg.report.headline_metric, cfg.seeds, cfg.report.n_boot)
    return gaps, pd.read_csv(layout.VAP_GAPS)


def _mechanism_targets(cfg: Config) -> list[str]:
    from medrepro.report.mechanisms import contrasts

    return sorted({str(p) for c in contrasts(cfg, modalities=False) for p in (c.with_path, c.without_path)})


def _mechanism_tables(cfg: Config) -> tuple[pd.DataFrame]:
    from medrepro.report.mechanisms import mechanisms_table

    return (mechanisms_table(cfg),)


EXPERIMENTS = {
    "colocated": Experiment("colocated", _colocated_targets, _ei_tables,
                            (layout.EI_COLOCATED, layout.EI_COLOCATED_GAPS)),
    "independent": Experiment("independent", _colocated_targets, _ei_tables,
                              (layout.EI_INDEPENDENT, layout.EI_INDEPENDENT_GAPS)),
    "vap3": Experiment("vap3", _vap3_targets, _vap3_tables, (layout.VAP3_TABLE3_GAPS, layout.VAP3_GENERATION_GAPS)),
    "hica3": Experiment("hica3", _hica_targets, _hica_tables, tuple(layout.hica3_table(k) for k in layout.HICA_TABLES)),
    "mechanisms": Experiment("mechanisms", _mechanism_targets, _mechanism_tables, (layout.MECHANISMS,)),
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ParamsError(f"unknown experiment {name!r} (one of {', '.join(EXPERIMENTS)})")
    return EXPERIMENTS[name]


def experiment_config(exp: Experiment, root: Path = Path(".")) -> Config:
    """params.yaml with the experiment's overlay (checked as every run's params are)."""
    overlay = root / exp.overlay
    if not overlay.is_file():
        raise ParamsError(f"experiment {exp.name}: overlay {overlay} is missing")
    return load_config(root / "params.yaml", overlay)


def prepare_folder(exp: Experiment, root: Path = Path(".")) -> Path:
    """``experiments/<name>/`` with relative links to this checkout and a DVC repository of its own."""
    folder = root / exp.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = folder / name
        if not link.is_symlink():
            if link.exists():
                raise MedreproError(f"{link} exists and is not a link to {root / name}: move it away")
            link.symlink_to(os.path.relpath((root / name).resolve(), folder.resolve()))
    if not (folder / ".dvc").is_dir():
        subprocess.run([PYTHON, "-m", "dvc", "init", "--no-scm", "-q"], cwd=folder, check=True)
    return folder


def run_experiment(exp: Experiment, cores: int, root: Path = Path("."), dry_run: bool = False) -> dict[Path, Path]:
    """Build the experiment's targets in its folder, then write its tables here; {table: where written}."""
    cfg = experiment_config(exp, root)
    folder = prepare_folder(exp, root)
    env = {k: v for k, v in os.environ.items() if k != OVERRIDE_ENV}  # the folder's own overlay, nothing else
    cmd = [PYTHON, "-m", "snakemake", "--cores", str(cores), "--configfile", str(exp.overlay),
           *(["-n"] if dry_run else []), "--", *exp.targets(cfg)]
    log.info("experiment %s: %s (in %s)", exp.name, " ".join(cmd[2:]), folder)
    done = subprocess.run(cmd, cwd=folder, env=env)
    if done.returncode:
        raise MedreproError(f"experiment {exp.name}: Snakemake failed in {folder} (its logs: {folder / 'logs'})")
    if dry_run:
        return {}
    with chdir(folder):
        tables = exp.tables(cfg)
    if len(tables) != len(exp.outputs):
        raise MedreproError(f"experiment {exp.name}: made {len(tables)} tables for its {len(exp.outputs)} outputs "
                            f"({', '.join(map(str, exp.outputs))})")
    from medrepro.report.table3 import write_table

    written = {}
    for path, df in zip(exp.outputs, tables, strict=True):
        write_table(df, root / path)
        written[path] = root / path
    return written
