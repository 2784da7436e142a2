"""Devices, precision, seeding and resource accounting: the same stage code on CPU and GPU."""

from __future__ import annotations

import contextlib
import random
import resource
import sys

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from medrepro.errors import ParamsError

        raise ParamsError("device: 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (``auto``/``bf16``), nothing on CPU unless ``bf16`` is asked for."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, the process's max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def prepare_model(model: torch.nn.Module, device: torch.device, compile_model: bool = False) -> torch.nn.Module:
    """Move to device; channels_last on CUDA; optional torch.compile of what training and inference run.

    The module is compiled in place (``nn.Module.compile``: its forward), and so is its ``training_loss`` when it
    has one (EI's Eq. 8, HiCA's Eq. 2): the training loop calls that method, which a ``torch.compile(model)``
    wrapper would pass straight to the uncompiled module.
    """
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        loss = getattr(model, "training_loss", None)
        if loss is not None:
            model.training_loss = torch.compile(loss)  # an instance attribute: what getattr finds first
        model.compile()
    return model
