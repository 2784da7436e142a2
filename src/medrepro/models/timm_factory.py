"""Downstream classifier towers: any timm architecture from a params block, pretrained weights checked on load.

ViT image towers for EI use ``medrepro.models.backbones.build_vit`` (position-embedding resampling, token access);
this factory serves the downstream CNN/hybrid classifiers (DenseNet-121, MaxViT). Both load weights through
``medrepro.models.weights``, with the same config semantics: ``pretrained: true`` + ``weights: <file>`` → that file;
``pretrained: true`` + ``weights: null|hub`` → the hub; ``weights`` without ``pretrained`` is a params error.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import timm
from torch import nn

from medrepro.errors import ParamsError
from medrepro.models import tiny_archs  # noqa: F401 — registers the embedded architectures with timm
from medrepro.models.weights import load_pretrained

__all__ = ["create_timm_model"]

_IMG_SIZE_FAMILIES = ("vit", "deit", "eva", "beit", "maxvit", "maxxvit", "swin")


def create_timm_model(cfg: Mapping[str, Any], num_classes: int, image_size: int | None = None) -> nn.Module:
    """``timm.create_model(cfg['arch'], ...)``; loading failures raise WeightsError naming the file or hub id.

    ``image_size`` becomes ``kwargs.img_size`` for architectures that take one (unless the block sets it). A local
    file's head is kept when it has ``num_classes`` rows, else a new head is initialised; every other tensor is
    compared with the file afterwards, because timm loads non-strictly whenever the head is replaced.
    """
    arch = cfg["arch"]
    kwargs = dict(cfg.get("kwargs") or {})
    if image_size is not None and "img_size" not in kwargs and _has_img_size(arch):
        kwargs["img_size"] = image_size
    weights = cfg.get("weights")
    if not cfg.get("pretrained", False):
        if weights:
            raise ParamsError(f"{arch}: 'weights' is set ({weights}) but 'pretrained' is false")
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    create = partial(timm.create_model, arch, num_classes=num_classes, **kwargs)
    return load_pretrained(create, arch, num_classes, str(weights) if weights else None)


def _has_img_size(arch: str) -> bool:
    return any(t in arch for t in _IMG_SIZE_FAMILIES)
