"""Feature extractors for the generation metrics: the FID Inception-v3, or any trained classifier.

An extractor maps uint8 images (N, 3, H, W) to ``(features (N, D), probs (N, K))`` as float64 numpy arrays, in
batches, without gradients, on CPU or CUDA. Its ``name`` names the metric columns (``metric_columns``): FD is only
called FID on the Inception features.

``inception_extractor`` is torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF-FID Inception ported to torch,
shared with pytorch-fid): uint8 input, resized to 299×299 by torch-fidelity's TF1-compatible bilinear
interpolation, scaled to [-1, 1]; features = pool3 (2048), probs = softmax of the 1008-way logits without the fc
bias ("logits_unbiased"), which is what the original IS code and torch-fidelity's IS use. The weights come from a
local file only: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torchvision key names) or
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (same keys, no BatchNorm counters) both load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from medrepro.errors import MedreproError, WeightsError

__all__ = ["INCEPTION_FILE", "INCEPTION_URL", "FeatureExtractor", "inception_extractor", "metric_columns",
           "model_extractor"]

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"
INCEPTION = "inception"
#: tensors whose shapes tell the FID Inception-v3 (1008 classes, TF block layout) from other checkpoints
_SIGNATURE = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
              "fc.weight": (1008, 2048)}


class FeatureExtractor(Protocol):
    """uint8 images (N, 3, H, W) → (features (N, D), class probabilities (N, K)), float64 numpy."""

    name: str

    def __call__(self, images: Tensor) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class _Batched:
    """A FeatureExtractor from ``run``: a device batch of uint8 images → (features, logits)."""

    name: str
    run: Callable[[Tensor], tuple[Tensor, Tensor]]
    device: torch.device
    batch_size: int

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be >= 1, got {self.batch_size}")

    def __call__(self, images: Tensor) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
                or images.shape[1] != 3 or len(images) == 0:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"{self.name}: expected a non-empty uint8 tensor (N, 3, H, W), got {shape}")
        feats, probs = [], []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                f, z = self.run(images[start:start + self.batch_size].to(self.device))
                feats.append(f.double().flatten(1).cpu().numpy())
                probs.append(torch.softmax(z.double(), dim=1).cpu().numpy())
        return np.concatenate(feats), np.concatenate(probs)


def model_extractor(name: str, features: Callable[[Tensor], Tensor], logits: Callable[[Tensor], Tensor],
                    preprocess: Callable[[Tensor], Tensor], batch_size: int = 256,
                    device: str | torch.device = "cpu") -> FeatureExtractor:
    """Extractor from a trained classifier: feats = features(preprocess(x)), probs = softmax(logits(feats)).

    ``logits`` is the classifier head applied to those features (the backbone runs once per batch), e.g. for a
    timm model ``features=lambda x: m.forward_head(m.forward_features(x), pre_logits=True)`` and
    ``logits=m.get_classifier()``. ``preprocess`` gets the uint8 batch already on ``device`` (resize, scale,
    normalise as in training); pass modules in eval mode, on ``device``. Metric columns: ``FD_<name>`` etc.
    """
    if not name or name == INCEPTION:
        raise ValueError(f"model_extractor needs a name other than {INCEPTION!r} (it names the FD_<name> columns)")
    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        f = features(preprocess(x))
        return f, logits(f)

    return _Batched(name, run, torch.device(device), batch_size)


def inception_extractor(weights: str | Path, device: str | torch.device = "cpu",
                        batch_size: int = 64) -> FeatureExtractor:
    """The FID Inception-v3 (pool3 features, 1008-way probabilities) with weights from the local file ``weights``."""
    # Szegedy et al. 2016 Inception-v3 (2015-12-05 TF graph) as used by Heusel et al. 2017 (FID), Salimans et al. 2016
    path = Path(weights)
    fetch = f"download {INCEPTION_URL} and pass its path"
    if not path.is_file():
        raise WeightsError(f"FID Inception weights not found: {path} ({fetch})")
    try:  # weights_only: a plain state dict or nothing (torch-fidelity itself unpickles without that guard)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable torch state dict ({type(exc).__name__}); "
                           f"expected {INCEPTION_FILE}: {fetch}") from exc
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)} if isinstance(state, dict) else {}
    wrong = {k: shapes.get(k) for k, shape in _SIGNATURE.items() if shapes.get(k) != shape}
    if wrong:  # e.g. torchvision's ImageNet Inception: fc.weight (1000, 2048)
        raise WeightsError(f"{path} is not the FID Inception-v3: {wrong} where {_SIGNATURE} were expected; "
                           f"expected {INCEPTION_FILE}: {fetch}")
    del state  # torch-fidelity reads the file again
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:
        raise MedreproError("the FID Inception needs torch-fidelity: pip install torch-fidelity==0.4.0") from exc
    try:
        net = FeatureExtractorInceptionV3(INCEPTION, ["2048", "logits_unbiased"],
                                          feature_extractor_weights_path=str(path))
    except Exception as exc:  # RuntimeError listing missing/unexpected keys or shape mismatches
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} does not fit the FID Inception-v3 ({detail}); "
                           f"expected {INCEPTION_FILE}: {fetch}") from exc
    net = net.to(torch.device(device)).eval()
    return _Batched(INCEPTION, lambda x: net(x), torch.device(device), batch_size)


def metric_columns(extractor_name: str) -> dict[str, str]:
    """Column names of fd/is/precision/recall: FID, IS, ... for Inception, FD_<name>, IS_<name>, ... otherwise."""
    if not extractor_name:
        raise ValueError("extractor_name must not be empty")
    if extractor_name == INCEPTION:
        return {"fd": "FID", "is": "IS", "precision": "precision", "recall": "recall"}
    return {m: f"{m.upper() if m in ('fd', 'is') else m}_{extractor_name}" for m in ("fd", "is", "precision", "recall")}
