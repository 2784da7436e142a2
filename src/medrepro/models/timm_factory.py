"""Creating timm classifiers (any architecture) from a params block, with weights from the hub or a local file.

ViT image towers for EI use ``medrepro.models.backbones.build_vit`` (position-embedding resampling, token access);
this factory serves the downstream CNN/hybrid classifiers (DenseNet-121, MaxViT). Same config semantics:
``pretrained: true`` + ``weights: <file>`` → that file; ``pretrained: true`` + ``weights: null|hub`` → the hub;
``weights`` without ``pretrained`` is a params error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from medrepro.errors import ParamsError, WeightsError
from medrepro.models import tiny_archs  # noqa: F401 — registers the embedded architectures with timm

HEAD_KEYS = ("head", "classifier", "fc", "head.fc")


def create_timm_model(cfg: Mapping[str, Any], num_classes: int, image_size: int | None = None) -> nn.Module:
    """``timm.create_model(cfg['arch'], ...)``; loading failures raise WeightsError naming the file or hub id.

    A local file goes through ``pretrained_cfg_overlay(file=…, num_classes=<file's head>)`` (without num_classes timm
    silently re-initialises the head); afterwards every non-head tensor is compared with the file, because timm loads
    non-strictly whenever the head is replaced.
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
    if weights and weights != "hub":
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"{arch}: weights file not found: {path}")
        try:
            state = timm.models.load_state_dict(str(path))
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"{arch}: cannot read weights file {path}: {exc}") from exc
        kwargs["pretrained_cfg_overlay"] = {"file": str(path), "num_classes": _head_rows(state, num_classes)}
        model = _create(arch, num_classes, kwargs, str(path))
        _verify(model, state, arch, str(path))
        return model
    return _create(arch, num_classes, kwargs, f"the hub (timm/{arch})")


def _create(arch: str, num_classes: int, kwargs: dict[str, Any], source: str) -> nn.Module:
    try:
        return timm.create_model(arch, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # noqa: BLE001 — any loader failure becomes one clear message
        raise WeightsError(f"{arch}: could not load pretrained weights from {source}: {exc}") from exc


def _is_head(key: str) -> bool:
    return any(key.startswith(h + ".") for h in HEAD_KEYS)


def _head_rows(state: Mapping[str, torch.Tensor], default: int) -> int:
    for key in ("head.weight", "classifier.weight", "fc.weight", "head.fc.weight"):
        if key in state:
            return int(state[key].shape[0])
    return default


def _verify(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, where: str) -> None:
    """Every non-head parameter/buffer must equal the file's tensor of the same name."""
    for key, value in model.state_dict().items():
        if _is_head(key) or key.endswith("num_batches_tracked"):
            continue
        if key not in state:
            raise WeightsError(f"{arch}: weights file {where} lacks {key!r} (different architecture?)")
        if state[key].shape != value.shape or not torch.equal(state[key].to(value.dtype), value):
            raise WeightsError(f"{arch}: tensor {key!r} from {where} did not load (shape {tuple(state[key].shape)})")


def _has_img_size(arch: str) -> bool:
    return any(t in arch for t in ("vit", "deit", "eva", "beit", "maxvit", "maxxvit", "swin"))
