"""Noisy descriptors for HiCA Table V (Sec. IV-E.2: "adding irrelevant terms or replacing descriptors with randomly
sampled ones"). The paper gives neither the terms nor the rate; chosen here (``hica.noise``):

- ``irrelevant``: a share ``rate`` of the captions get ``terms`` words inserted at random word positions (never
  only at the end, which a text tower's token limit could cut), drawn from a fixed list of words that describe
  nothing in a medical image (no colour, shape, size, count or position);
- ``replace``: a share ``rate`` of the captions are replaced by the caption of another training sample drawn at
  random (any class), so the descriptor may describe another class.
Class-name templates are never corrupted; which captions change is seeded by the run's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KINDS = ("irrelevant", "replace")
IRRELEVANT = ("invoice", "weather", "keyboard", "holiday", "orchestra", "tuesday", "recipe", "password",
              "football", "umbrella", "novel", "parking", "laptop", "garden", "airport", "coffee")


def corrupt(captions: Sequence[str], kind: str, rate: float, seed: int, terms: int = 3) -> list[str]:
    """``captions`` with a ``rate`` share (rounded) corrupted by ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"noise kind must be one of {KINDS}, got {kind!r}")
    if not 0 <= rate <= 1:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    out = list(captions)
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    chosen = rng.choice(len(out), size=int(round(rate * len(out))), replace=False)
    for i in chosen:
        if kind == "irrelevant":
            words = out[i].split()
            for term in rng.choice(IRRELEVANT, size=terms):
                words.insert(int(rng.integers(len(words) + 1)), str(term))
            out[i] = " ".join(words)
        else:
            out[i] = captions[int(rng.integers(len(captions)))]
    return out
