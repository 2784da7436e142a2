"""The two towers of one open_clip model as HiCA's towers (HiCA Sec. III, paper profile: CLIP ViT-B/16 or
BiomedCLIP), each with CLIP's own projection into the joint space.

- ``ClipImageTower``: the image tower seen through the timm calls HiCA makes (``forward_features`` →
  ``forward_head(pre_logits=True)``): images (any size, 1 or 3 channels) are resized to the tower's input size
  (bilinear, antialiased) and grey images repeated to three channels, then ``visual(x)`` gives CLIP's projected
  image embedding. ROI crops go through the same resize.
- ``ClipSentenceEncoder``: ``encode_text`` of the same model, i.e. CLIP's projected text embedding (frozen). Its
  tokenizer cuts a text at the model's context (77 tokens for CLIP, 256 for BiomedCLIP), as open_clip does; a
  warning says how many texts reached it.
With HiCA's projection heads initialised to the identity, the untouched model scores exactly as CLIP's own
zero-shot prompt matching (``tests/test_hica_clip.py``).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.errors import WeightsError
from medrepro.models.text import load_open_clip

WHAT = "HiCA CLIP towers (hica.clip)"

log = logging.getLogger("medrepro")


@functools.lru_cache(maxsize=1)
def _loaded(model: str, weights: str | None) -> nn.Module:
    """The pretrained model, read once per process (a run needs it for its text tower and its image towers)."""
    return load_open_clip(model, weights, WHAT).eval()


def load_clip(model: str, weights: str | None, pretrained: bool = True) -> nn.Module:
    """A copy of the open_clip model ``model`` with its weights (hub id or local file; WeightsError otherwise), or
    its architecture alone (``pretrained=False``: a saved run whose weights are loaded on top)."""
    if pretrained:
        return copy.deepcopy(_loaded(model, weights))  # callers change their copy (towers train, visual dropped)
    import open_clip

    try:
        return open_clip.create_model(model, load_weights=False, pretrained_text=False).eval()
    except Exception as exc:
        raise WeightsError(f"{WHAT}: cannot build open_clip model {model}: {exc}") from exc


def configured_clip(clip: Mapping[str, str | None]) -> tuple[dict[str, str | None] | None, nn.Module | None]:
    """``hica.clip`` as (its config, the loaded model), or (None, None) when ``model`` is null."""
    if not clip["model"]:
        return None, None
    return dict(clip), load_clip(clip["model"], clip["weights"])


def clip_normalization(clip: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's own input mean and std (open_clip's preprocess config)."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(clip)
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


class ClipImageTower(nn.Module):
    """An open_clip image tower with timm's ``forward_features``/``forward_head`` and ``num_features``."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, Sequence) else (int(size), int(size))
        with torch.no_grad():
            was = visual.training
            self.num_features = int(visual.eval()(torch.zeros(1, 3, *self.image_size)).shape[-1])
            visual.train(was)

    def forward_features(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        return self.visual(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x  # visual(x) is already the pooled, projected embedding

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


def image_towers(clip: nn.Module, modalities: Sequence[str]) -> dict[str, ClipImageTower]:
    """One copy of the image tower per modality (each fine-tunes on its own images)."""
    return {m: ClipImageTower(copy.deepcopy(clip.visual)) for m in modalities}


class ClipSentenceEncoder(nn.Module):
    """Frozen text tower: texts → CLIP's projected text embeddings (N, embed_dim). Takes ``clip`` over and drops
    its image tower (copy that first: ``image_towers``)."""

    def __init__(self, clip: nn.Module, model: str) -> None:
        import open_clip

        super().__init__()
        try:
            self.tokenizer = open_clip.get_tokenizer(model)
        except Exception as exc:
            raise WeightsError(f"{WHAT}: cannot load the tokenizer of {model}: {exc}") from exc
        clip.visual = nn.Identity()  # the text half only
        self.clip = clip.requires_grad_(False).eval()
        self.dim = int(self.sentences(["x"]).shape[-1])

    def train(self, mode: bool = True) -> ClipSentenceEncoder:
        return super().train(False)  # frozen: always eval

    @torch.no_grad()
    def sentences(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """(N, embed_dim) embeddings; a text longer than the context is cut there (a warning counts them)."""
        device = next(self.clip.parameters()).device
        out, full = [], 0
        for i in range(0, len(texts), batch_size):
            ids = self.tokenizer(list(texts[i:i + batch_size]))
            full += int((ids[:, -1] != 0).sum())  # no padding left: the text filled the context (or was cut)
            out.append(self.clip.encode_text(ids.to(device)).float().cpu())
        if full:
            log.warning("%s: %d of %d texts fill the text tower's %d-token context; longer ones are cut there",
                        WHAT, full, len(texts), ids.shape[-1])
        return torch.cat(out) if out else torch.zeros(0, 0)


def identity_(linear: nn.Linear) -> nn.Linear:
    """Initialise a square projection to the identity (bias zero): CLIP's own space until it trains."""
    if linear.in_features != linear.out_features:
        raise ValueError(f"identity init needs a square projection, got {linear.in_features}→{linear.out_features}")
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.in_features))
        if linear.bias is not None:
            linear.bias.zero_()
    return linear
