"""Shared pieces of the caption tests: a prepared synth_mm folder and backends that count or fail requests."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from medrepro.captions.backends.attributes import AttributesBackend
from medrepro.captions.backends.base import Answer, Request
from medrepro.data.manifest import load_manifest
from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import get_adapter
from medrepro.data.splits import make_subsets


def prepared_synth(root: Path, n_train: int, n_val: int, gen_size: int = 64) -> tuple[Path, pd.DataFrame, dict]:
    """fetch + prepare + split of a small synth_mm under ``root`` (the default's difficulty and leak)."""
    opts = {"n_train": n_train, "n_val": n_val, "n_test": 8, "gen_size": gen_size, "image_size": 32,
            "difficulty": 0.3, "leak": 0.15, "coupling": "independent"}
    adapter = get_adapter("synth_mm", opts)
    fetch(adapter, root / "raw" / "synth_mm")
    prepare(adapter, root / "raw" / "synth_mm", root / "prepared" / "synth_mm")
    manifest, classes = load_manifest(root / "prepared" / "synth_mm")
    (root / "splits" / "synth_mm").mkdir(parents=True, exist_ok=True)
    make_subsets(manifest, [0.1, 1.0], [1], [0, 1]).to_parquet(root / "splits" / "synth_mm" / "subsets.parquet")
    return root / "prepared" / "synth_mm", manifest, classes


class Counting(AttributesBackend):
    """The attributes backend, counting requests (and optionally slow, to be killed mid-run)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.requests = 0
        self.delay = delay

    def answer(self, requests: list[Request]) -> list[Answer]:
        self.requests += len(requests)
        time.sleep(self.delay * len(requests))
        return super().answer(requests)


class Flaky(Counting):
    """Fails every step-3 request of the first ``fail_runs`` calls, with a server-like reason."""

    def __init__(self, fail_calls: int) -> None:
        super().__init__()
        self.fail_calls = fail_calls

    def answer(self, requests: list[Request]) -> list[Answer]:
        out = super().answer(requests)
        if self.fail_calls > 0 and any(r.step == 3 for r in requests):
            self.fail_calls -= 1
            return [Answer(error="http://model: HTTP 500 (internal error)") if r.step == 3 else a
                    for r, a in zip(requests, out, strict=True)]
        return out
