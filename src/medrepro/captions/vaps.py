"""The VAPS chain over a dataset (VAP-Diffusion Sec. 2.2): step 2 per modality, step 1 and step 3 per image.

Every answer goes through the cache; only uncached questions reach the backend, in batches. Images that still
lack a step after the run make it fail with how many and why (failures stay recorded for the next run).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from medrepro.captions.backends.base import Backend, Request
from medrepro.captions.cache import CaptionCache, cache_key, file_sha256
from medrepro.captions.prompts import PROMPT_VERSION, Modality
from medrepro.errors import DataError, MedreproError
from medrepro.progress import progress_disabled

COLUMNS = ["sample_id", "modality", "t1", "t2", "t_mix", "backend", "model", "prompt_version", "image_sha256"]


class CaptionError(MedreproError):
    """Captions are still missing after the run (the message says how many and why)."""


@dataclass(frozen=True)
class Item:
    """One image to caption: a sample's image column, its prompt set and file."""

    sample_id: str
    column: str
    modality: Modality
    path: Path


@dataclass
class Stats:
    requests: int = 0
    cache_hits: int = 0
    failures: Counter = field(default_factory=Counter)  # backend → failed requests
    reasons: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    images: int = 0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "cache_hits": self.cache_hits, "failures": dict(self.failures),
                "images": self.images, "wall_s": round(self.wall_s, 3),
                "images_per_s": round(self.images / self.wall_s, 3) if self.wall_s > 0 else None}


def check_image(path: Path) -> str:
    """sha256 of an image file after checking it decodes; errors name the file."""
    if not path.is_file():
        raise DataError(f"image named by the manifest is missing: {path}")
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt or unreadable image named by the manifest: {path}: {exc}") from exc
    return file_sha256(path)


def _ask(backend: Backend, cache: CaptionCache, todo: list[tuple[Request, dict]], batch_size: int, stats: Stats,
         desc: str, on_batch: Callable[[], None] | None = None) -> None:
    """Send uncached requests in batches; cache each answer or record its failure."""
    bar = tqdm(total=len(todo), desc=desc, disable=progress_disabled())
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        answers = backend.answer([r for r, _ in chunk])
        stats.requests += len(chunk)
        for (req, meta), ans in zip(chunk, answers, strict=True):
            if ans.text is not None:
                cache.put(req.key, ans.text, meta)
            else:
                stats.failures[backend.name] += 1
                stats.reasons[ans.error or "unknown"] += 1
                cache.record_failure(req.key, ans.error or "unknown", meta)
        bar.update(len(chunk))
        if on_batch:
            on_batch()
    bar.close()


def caption_items(items: list[Item], backend: Backend, cache: CaptionCache, batch_size: int,
                  on_batch: Callable[[], None] | None = None) -> tuple[pd.DataFrame, Stats]:
    """Captions of ``items`` (``COLUMNS``, in item order) and the run's statistics; raises CaptionError if any lack."""
    start = time.perf_counter()
    stats = Stats(images=len(items))
    shas = [check_image(it.path) for it in tqdm(items, desc="hash", disable=progress_disabled())]

    def key(sha: str, step: int) -> str:
        return cache_key(sha, backend.name, backend.model, PROMPT_VERSION, step)

    def meta(it: Item | None, mod: Modality, step: int, sha: str) -> dict:
        return {"backend": backend.name, "model": backend.model, "prompt_version": PROMPT_VERSION, "step": step,
                "modality": mod.name, "image_sha256": sha, "sample_id": it.sample_id if it else None}

    def lookup(reqs: list[tuple[Request, dict]]) -> list[tuple[Request, dict]]:
        todo = []
        for req, m in reqs:
            if cache.get(req.key) is None:
                todo.append((req, m))
            else:
                stats.cache_hits += 1
        return todo

    # step 2: modality knowledge, asked once per modality without an image
    mods = {it.modality.name: it.modality for it in items}
    step2 = {name: Request(key(f"modality:{name}", 2), 2, mod, mod.question(2), None) for name, mod in mods.items()}
    _ask(backend, cache, lookup([(r, meta(None, r.modality, 2, "")) for r in step2.values()]), batch_size, stats,
         "VAPS step 2")
    # step 1: initial impression of each image
    step1 = [(Request(key(sha, 1), 1, it.modality, it.modality.question(1), it.path), meta(it, it.modality, 1, sha))
             for it, sha in zip(items, shas, strict=True)]
    _ask(backend, cache, lookup(step1), batch_size, stats, "VAPS step 1", on_batch)
    # step 3: t_mix from t1, t2 and the image
    t2 = {name: cache.get(r.key) for name, r in step2.items()}
    t1 = [cache.get(r.key) for r, _ in step1]
    step3 = [(Request(key(sha, 3), 3, it.modality, it.modality.step3_prompt(a, t2[it.modality.name]), it.path),
              meta(it, it.modality, 3, sha))
             for it, sha, a in zip(items, shas, t1, strict=True) if a is not None and t2[it.modality.name]]
    _ask(backend, cache, lookup(step3), batch_size, stats, "VAPS step 3", on_batch)

    rows, missing = [], []
    for it, sha, a in zip(items, shas, t1, strict=True):
        b, c = t2[it.modality.name], cache.get(key(sha, 3))
        if a is None or b is None or c is None:
            missing.append(f"{it.sample_id}/{it.column}")
            continue
        rows.append({"sample_id": it.sample_id, "modality": it.column, "t1": a, "t2": b, "t_mix": c,
                     "backend": backend.name, "model": backend.model, "prompt_version": PROMPT_VERSION,
                     "image_sha256": sha})
    stats.wall_s = time.perf_counter() - start
    if missing:
        why = "; ".join(f"{n}× {r}" for r, n in stats.reasons.most_common(3)) or "see the failures folder"
        raise CaptionError(f"{len(missing)} of {len(items)} images still have no complete caption after this run "
                           f"(e.g. {', '.join(missing[:3])}); failed requests: {why}. They are recorded under "
                           f"{cache.root / 'failures'} and asked again on the next run.")
    return pd.DataFrame(rows, columns=COLUMNS), stats
