"""Fixtures only; shared helpers live in tests/helpers.py (imported by the tests that need them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away copy of the project (git + DVC) with a tiny params.yaml, for pipeline tests."""
    return make_project(tmp_path / "proj")
