"""The one interface every captioning backend implements: a batch of VAPS requests in, one answer each out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from medrepro.captions.prompts import Modality


@dataclass(frozen=True)
class Request:
    """One VAPS question: step 2 has no image (Sec. 2.2, "instead of direct observation"), steps 1 and 3 do."""

    key: str  # the cache key (medrepro.captions.cache.cache_key)
    step: int
    modality: Modality
    prompt: str
    image: Path | None


@dataclass(frozen=True)
class Answer:
    """The model's text, or why there is none (never an empty or placeholder text)."""

    text: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.error is None):
            raise ValueError("an Answer has either a text or an error")


class Backend(Protocol):
    """A captioner: ``name`` and ``model`` go into cache keys and caption rows."""

    name: str
    model: str

    def answer(self, requests: list[Request]) -> list[Answer]:
        """One Answer per request, in order; a failed request is an Answer with ``error``, not an exception."""
        ...

    def close(self) -> None:
        """Release connections or GPU memory."""
        ...


def check_text(text: object, where: str) -> Answer:
    """A model reply as an Answer: a non-empty string, else an error naming what came back."""
    if not isinstance(text, str):
        return Answer(error=f"{where}: reply has no text (got {type(text).__name__})")
    text = text.strip()
    if not text:
        return Answer(error=f"{where}: empty reply")
    return Answer(text=text)
