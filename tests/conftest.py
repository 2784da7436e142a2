"""Fixtures only; shared helpers live in tests/helpers.py (imported by the tests that need them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_project, run


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away copy of the project (git + DVC) with a tiny params.yaml, for pipeline tests."""
    return make_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def built_project(tmp_path_factory) -> Path:
    """A tiny project after ``snakemake results/table3.csv``, built once per session; tests take copies of it
    (``built_copy``) instead of rebuilding the same DAG."""
    proj = make_project(tmp_path_factory.mktemp("built") / "proj")
    run(["snakemake", "--cores", "2", "results/table3.csv"], proj)
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
