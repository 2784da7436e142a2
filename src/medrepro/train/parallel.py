"""Independent training runs of one stage side by side, without changing their numbers.

A stage given T threads (Snakemake's ``threads``) that has J independent runs (e.g. one per modality) runs
min(T, J) of them at once in forked worker processes, each with T // workers torch threads. With T = 1 (DVC's
default ``threads: 1``) or J = 1 the runs go one after another in this process, as before. Each run seeds itself,
so a run's result does not depend on which process trains it; with T = J · k it also keeps its thread count k, so
``snakemake`` (rule threads) and ``dvc repro`` (``threads: 1``) give identical numbers when k = 1.
Only on CPU: CUDA does not survive a fork.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import torch

J = TypeVar("J")
R = TypeVar("R")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_side_by_side(fn: Callable[[J], R], jobs: Sequence[J], device: torch.device) -> list[R]:
    """``[fn(job) for job in jobs]``, run in up to ``torch.get_num_threads()`` forked processes on CPU, in order."""
    threads = torch.get_num_threads()
    workers = min(threads, len(jobs))
    if workers <= 1 or device.type != "cpu":
        return [fn(job) for job in jobs]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(max(1, threads // workers),)) as pool:
        return list(pool.map(fn, jobs))
