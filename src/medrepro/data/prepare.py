"""fetch → prepare for any registered dataset: extract, build and validate the manifest, cache the images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medrepro.data.cache import CACHE_DIR, build_cache
from medrepro.data.download import fetch_dataset
from medrepro.data.manifest import MANIFEST, validate_manifest, write_classes
from medrepro.data.registry import DatasetAdapter
from medrepro.errors import DataError
from medrepro.io import atomic_path, write_json

FILES_DIR = "files"


def fetch(adapter: DatasetAdapter, raw_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Ensure the raw files are present and verified; write ``fetch.json`` (names, sizes, sha256) last."""
    record = fetch_dataset(adapter, raw_dir, seed)
    write_json(raw_dir / "fetch.json", record)
    return record


def prepare(adapter: DatasetAdapter, raw_dir: Path, out_dir: Path, workers: int = 2) -> dict[str, Any]:
    """Build ``out_dir`` (manifest.parquet, classes.json, files/, cache/) atomically; return a summary.

    Everything is written into a temporary sibling folder that replaces ``out_dir`` only when complete, so a bad
    archive, label file or image leaves no half-written manifest or cache behind.
    """
    try:
        return _prepare(adapter, raw_dir, out_dir, workers)
    except DataError as exc:  # name files by where they would have been, not the deleted temporary folder
        msg = re.sub(r"[^\s'\"]*\." + re.escape(out_dir.name) + r"\.[^/\s]*\.tmp", str(out_dir), str(exc))
        raise DataError(msg) from exc


def _prepare(adapter: DatasetAdapter, raw_dir: Path, out_dir: Path, workers: int) -> dict[str, Any]:
    info = adapter.info
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        df = adapter.build_manifest(raw_dir, tmp / FILES_DIR)
        df = validate_manifest(df, info, tmp, source=f"{info.name} labels in {raw_dir}")
        (tmp / CACHE_DIR).mkdir()
        for m, ch in zip(info.modalities, info.channels, strict=True):
            paths = [tmp / p for p in df[f"path_{m}"]]
            build_cache(paths, lambda p, m=m: adapter.load_image(p, m), adapter.image_size, ch,
                        tmp / CACHE_DIR / m, workers=workers, desc=f"{info.name}/{m}")
        df.to_parquet(tmp / MANIFEST, index=False)
        write_classes(tmp, info, {"image_size": adapter.image_size})
        counts = df["split"].value_counts().to_dict()
    return {"dataset": info.name, "n_samples": len(df), "splits": counts, "image_size": adapter.image_size}
