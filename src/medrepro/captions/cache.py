"""The caption cache: one JSON file per (image sha256, backend, model, prompt version, step).

It lives in a ``persist: true`` folder, so an interrupted or repeated run never asks a model twice. A failed request
is written under ``failures/`` (why, when) and asked again on the next run; it never becomes a caption.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from medrepro.io import atomic_path


def cache_key(image_sha256: str, backend: str, model: str, prompt_version: str, step: int) -> str:
    """sha256 of the five parts (step 2 has no image: pass ``modality:<name>`` as ``image_sha256``)."""
    return hashlib.sha256("\x1f".join([image_sha256, backend, model, prompt_version, str(step)]).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CaptionCache:
    """Answers by cache key under ``root``; writes are atomic (a killed run leaves whole entries or none)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        for tmp in self.root.glob("**/.*.tmp"):  # half-written entries of a killed run (one run owns the cache)
            shutil.rmtree(tmp, ignore_errors=True)

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def _failure(self, key: str) -> Path:
        return self.root / "failures" / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._entry(key)
        if not path.is_file():
            return None
        text = json.loads(path.read_text()).get("text")
        return text if isinstance(text, str) and text else None

    def put(self, key: str, text: str, meta: dict) -> None:
        with atomic_path(self._entry(key)) as tmp:
            tmp.write_text(json.dumps({**meta, "text": text}, sort_keys=True) + "\n")
        self._failure(key).unlink(missing_ok=True)

    def record_failure(self, key: str, error: str, meta: dict) -> None:
        path = self._failure(key)
        tries = json.loads(path.read_text()).get("tries", 0) if path.is_file() else 0
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({**meta, "error": error, "tries": tries + 1, "time": time.time()},
                                      sort_keys=True) + "\n")

    def failures(self) -> dict[str, dict]:
        folder = self.root / "failures"
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
