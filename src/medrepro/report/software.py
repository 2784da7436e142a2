"""The software a result was made with: Python, the platform, the versions of the stack's packages and whether the
installed set is the one ``requirements.lock`` pins."""

from __future__ import annotations

import hashlib
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
from packaging.requirements import Requirement

#: the packages whose versions decide the numbers (models, data, metrics) and the drivers
PACKAGES = ("medrepro", "torch", "torchvision", "timm", "open_clip_torch", "diffusers", "transformers", "peft",
            "sentence-transformers", "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "snakemake", "dvc")
#: the lock of the whole environment (``make lock`` writes it, ``make install`` installs exactly it)
LOCK = Path("requirements.lock")
#: installed but never locked: the project itself and the installer (a venv brings its own pip)
UNLOCKED = frozenset({"medrepro", "pip"})


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins(lock: Path) -> dict[str, str]:
    """name → version of every ``name==version`` line of a pip requirements lock whose environment marker holds on
    this interpreter (hash lines, comments and other platforms' pins are skipped)."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if not line or line[0] in " #-\t":
            continue
        req = Requirement(line.rstrip(" \\"))
        if req.marker is not None and not req.marker.evaluate():
            continue
        (spec,) = req.specifier
        if spec.operator != "==":
            raise ValueError(f"{lock}: '{line.strip()}' is not an exact pin")
        pins[_canonical(req.name)] = spec.version
    return pins


def installed_versions() -> dict[str, str]:
    """name → version of every distribution installed in this interpreter's environment."""
    return {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def lock_differences(lock: Path, installed: dict[str, str] | None = None) -> list[str]:
    """Every way the installed distributions differ from ``lock``: a wrong version, a locked package that is
    missing, an installed one the lock does not name (``UNLOCKED`` aside). Empty when the environment is the lock."""
    pins, have = locked_pins(lock), installed_versions() if installed is None else installed
    out = [f"{n}: installed {have[n]}, locked {v}" for n, v in sorted(pins.items()) if n in have and have[n] != v]
    out += [f"{n}: locked {v}, not installed" for n, v in sorted(pins.items()) if n not in have]
    out += [f"{n}: installed {v}, not in {lock.name}" for n, v in sorted(have.items())
            if n not in pins and n not in UNLOCKED]
    return out


def lock_status(lock: Path = LOCK) -> str:
    """One line for the provenance table: the lock's sha256 and whether this environment equals it."""
    if not lock.is_file():
        return f"{lock} not found"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    diff = lock_differences(lock)
    return f"sha256:{digest}, " + ("installed set equals the lock" if not diff else
                                   f"installed set differs in {len(diff)} packages: {'; '.join(diff[:5])}")


def software_versions(lock: Path = LOCK) -> pd.DataFrame:
    """(name, version) rows: Python, the platform, the lock's status, then ``PACKAGES`` (read from the installed
    metadata, without importing them)."""
    rows = [("python", sys.version.split()[0]), ("platform", platform.platform()), (lock.name, lock_status(lock))]
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["name", "version"])
