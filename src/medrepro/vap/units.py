"""Finished (seed, modality) generator runs kept across a killed or failed stage run.

A generator stage trains one run per (seed, modality) in one job, and Snakemake and DVC delete a job's outputs
before they rerun it. So each finished run also leaves its weights, description and metrics record in the stage's
``persist: true`` checkpoint folder, under a key of everything that made it: its description (every param), its
inputs (images, labels, sample ids, captions) and the source of the stage's code. A rerun whose key matches takes
the run from there instead of training it again (the same bytes an uninterrupted run writes); any other key trains
afresh. The folder is emptied when the stage has written its metrics.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrepro.io import atomic_path, read_json, write_json
from medrepro.layout import RunPaths
from medrepro.source import closure, digest
from medrepro.train.loop import fingerprint

log = logging.getLogger("medrepro")


def data_digest(*inputs: np.ndarray | Sequence[str]) -> str:
    """sha256 of arrays (dtype, shape and bytes) and lists of strings."""
    h = hashlib.sha256()
    for x in inputs:
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).data)
        else:
            h.update(b"\0".join(str(s).encode() for s in x) + b"\1")
    return h.hexdigest()


def unit_key(desc: Mapping[str, Any], stage: str, *inputs: np.ndarray | Sequence[str]) -> str:
    """The key of a run: its description, its inputs and the source its ``stage`` module runs (its import
    closure, ``medrepro.source``)."""
    return fingerprint({"desc": desc, "code": digest(closure(stage)), "data": data_digest(*inputs)})


def _files(paths: RunPaths, seed: int, modality: str) -> tuple[Path, Path]:
    ckpt = paths.checkpoint(seed, modality)
    return ckpt.with_suffix(".done.safetensors"), ckpt.with_suffix(".done.json")


def reuse_unit(paths: RunPaths, seed: int, modality: str, key: str) -> dict[str, Any] | None:
    """Put a kept run of ``key`` back as the stage's output and return its record; None when there is none."""
    weights, record = _files(paths, seed, modality)
    if not (weights.is_file() and record.is_file()):
        return None
    try:
        saved = read_json(record)
    except ValueError:
        log.info("ignoring a damaged finished-run record %s", record)
        return None
    if saved.get("key") != key:
        log.info("ignoring the finished run %s: made with other params, inputs or code", record)
        return None
    target = paths.weights(seed, modality)
    with atomic_path(target) as tmp:
        shutil.copyfile(weights, tmp)
    write_json(target.with_suffix(".json"), saved["desc"])
    log.info("seed %d, %s: finished before the restart; kept (%s)", seed, modality, weights)
    return {**saved["record"], "kept_from_earlier_run": True}


def keep_unit(paths: RunPaths, seed: int, modality: str, key: str, record: Mapping[str, Any]) -> None:
    """Copy a finished run's output (weights + description) and ``record`` into the checkpoint folder, and drop
    its resume checkpoint (finished: a rerun takes the kept unit instead)."""
    weights, record_file = _files(paths, seed, modality)
    source = paths.weights(seed, modality)
    with atomic_path(weights) as tmp:
        shutil.copyfile(source, tmp)
    write_json(record_file, {"key": key, "desc": read_json(source.with_suffix(".json")), "record": dict(record)})
    paths.checkpoint(seed, modality).unlink(missing_ok=True)


def clear_units(paths: RunPaths) -> None:
    """Drop every kept run of the stage (it has finished)."""
    for f in paths.checkpoints.glob("*.done.*"):
        f.unlink(missing_ok=True)
