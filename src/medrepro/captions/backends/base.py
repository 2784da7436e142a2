"""The one interface every captioning backend implements: a batch of VAPS requests in, one answer each out."""

from __future__ import annotations

import re
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
        if self.text is not None and _CONTROL.search(self.text):
            raise ValueError("an Answer's text has control characters (pass replies through check_text)")


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


# A generous bound on characters per token: BPE vocabularies' longest common tokens are well under 16 characters, so
# a reply longer than 16 × max_new_tokens did not come from a generation that respected the limit.
MAX_CHARS_PER_TOKEN = 16
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")  # terminal escape sequences (CSI and two-character)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 control characters except tab and newline


def clean_text(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (tab and newline stay)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def check_text(text: object, where: str, max_new_tokens: int | None = None) -> Answer:
    """A model reply as an Answer: a non-empty string without control characters, no longer than ``max_new_tokens``
    can produce (``MAX_CHARS_PER_TOKEN`` per token), else an error naming what came back."""
    if not isinstance(text, str):
        return Answer(error=f"{where}: reply has no text (got {type(text).__name__})")
    text = clean_text(text).strip()
    if not text:
        return Answer(error=f"{where}: empty reply")
    if max_new_tokens is not None and len(text) > (limit := MAX_CHARS_PER_TOKEN * max_new_tokens):
        return Answer(error=f"{where}: {len(text):,} characters, more than max_new_tokens={max_new_tokens} allows "
                            f"(at most {limit:,}); not taken as a caption")
    return Answer(text=text)
