"""The software a result was made with: Python, the platform and the versions of the stack's packages."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import pandas as pd

#: the packages whose versions decide the numbers (models, data, metrics) and the drivers
PACKAGES = ("medrepro", "torch", "torchvision", "timm", "open_clip_torch", "diffusers", "transformers", "peft",
            "sentence-transformers", "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "snakemake", "dvc")


def software_versions() -> pd.DataFrame:
    """(name, version) rows: Python, the platform, then ``PACKAGES`` (read from the installed metadata, without
    importing them)."""
    rows = [("python", sys.version.split()[0]), ("platform", platform.platform())]
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["name", "version"])
