"""Writing trained weights: safetensors written atomically, with the params JSON that made them beside them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from medrepro.io import atomic_path, write_json


def save_weights(path: Path, state: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """``state`` as contiguous CPU tensors in one safetensors file, appearing only when complete."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=metadata)


def finish_run(weights: Path, state: Mapping[str, torch.Tensor], desc: Mapping[str, Any], ckpt: Path | None,
               metadata: dict[str, str] | None = None) -> None:
    """Save a finished run's weights and ``<weights>.json`` (its description); drop its resume checkpoint."""
    save_weights(weights, state, metadata)
    write_json(weights.with_suffix(".json"), desc)
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)  # finished: a rerun starts fresh
