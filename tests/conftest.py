"""Fixtures only; shared helpers live in tests/helpers.py (imported by the tests that need them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away copy of the project (git + DVC) with a tiny params.yaml, for pipeline tests."""
    return make_project(tmp_path / "proj")


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and reproducibly, on one torch thread (the CPU is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
