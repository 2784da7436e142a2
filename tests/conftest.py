"""Fixtures only; shared helpers live in tests/helpers.py (imported by the tests that need them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from helpers import make_project, run


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away copy of the project (git + DVC) with a tiny params.yaml, for pipeline tests."""
    return make_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def built_project(tmp_path_factory, worker_id: str) -> Path:
    """A tiny project after ``snakemake results/table3.csv``, built once per test run — under pytest-xdist once for
    all workers (a file lock in the run's shared temp root) — and copied by the tests that need it (``built_copy``)."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # shared by every worker of this run
    proj, done = root / "built" / "proj", root / "built.done"
    with FileLock(str(root / "built.lock")):
        if not done.is_file():
            shutil.rmtree(proj.parent, ignore_errors=True)
            make_project(proj)
            run(["snakemake", "--cores", "2", "results/table3.csv"], proj)
            done.touch()
    return proj


@pytest.fixture
def built_copy(built_project: Path, tmp_path: Path) -> Path:
    """A private copy of ``built_project`` (files, mtimes, git, DVC and Snakemake state)."""
    return Path(shutil.copytree(built_project, tmp_path / "proj", symlinks=True))


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and reproducibly, on one torch thread (the CPU is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    """Under pytest-xdist each worker gets one torch thread: two workers fill the two cores without oversubscribing."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


#: e2e tests run first, in this order: under xdist the first test (built project) starts the shared build at once
#: while the second worker runs the long tests that need no build; the rest alternate between the two workers.
E2E_ORDER = ("test_snakemake_and_dvc_agree_and_reproduce", "test_bad_params_stop_both_drivers_before_any_stage",
             "test_every_ei_stage_runs_on_the_paper_profile",
             "test_hica_tables_are_their_own_targets", "test_ei_tables_are_their_own_targets",
             "test_generation_tables_are_their_own_targets", "test_snakemake_and_dvc_build_the_same_captions",
             "test_changed_param_reruns_only_affected_rules", "test_report_holds_the_tables_plots_grids_and_versions")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(E2E_ORDER)}
    items.sort(key=lambda item: rank.get(item.originalname, len(rank)))  # stable: the others keep their order
