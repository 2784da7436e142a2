"""Progress-bar policy: tqdm bars only on an interactive terminal, never in CI."""

from __future__ import annotations

import os
import sys


def progress_disabled() -> bool:
    """True when stderr is not a TTY or a CI environment variable is set."""
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()
