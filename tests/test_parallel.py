"""Independent runs side by side give the numbers they give one after another."""

from __future__ import annotations

import os

import torch

from medrepro.train.parallel import run_side_by_side


def _seeded_draw(seed: int) -> tuple[int, list[float], int]:
    torch.manual_seed(seed)
    return os.getpid(), torch.randn(3).tolist(), torch.get_num_threads()


def test_side_by_side_equals_sequential(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    sequential = run_side_by_side(_seeded_draw, [0, 1, 2], cpu)
    monkeypatch.undo()
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        parallel = run_side_by_side(_seeded_draw, [0, 1, 2], cpu)
    finally:
        torch.set_num_threads(old)
    assert [d for _, d, _ in parallel] == [d for _, d, _ in sequential]  # same numbers, same order
    assert {p for p, _, _ in sequential} == {os.getpid()}  # one thread: in this process
    assert os.getpid() not in {p for p, _, _ in parallel}  # two threads: in worker processes
    assert {t for _, _, t in parallel} == {1}  # 2 threads over 2 workers: one each
