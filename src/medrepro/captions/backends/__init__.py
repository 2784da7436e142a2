"""Captioning backends behind one interface (``Backend``), chosen by ``captions.backend`` in params.yaml."""

from __future__ import annotations

from medrepro.captions.backends.base import Answer, Backend, Request
from medrepro.errors import ParamsError

__all__ = ["Answer", "Backend", "Request", "make_backend"]


def make_backend(cfg, device: str = "auto") -> Backend:
    """The backend ``cfg.backend`` names (``cfg`` is a ``CaptionConfig``); heavy imports only for the chosen one."""
    if cfg.backend == "attributes":
        from medrepro.captions.backends.attributes import AttributesBackend

        return AttributesBackend()
    if cfg.backend == "openai":
        from medrepro.captions.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(cfg.openai, cfg.max_new_tokens)
    if cfg.backend == "transformers":
        from medrepro.captions.backends.hf_vlm import TransformersBackend

        return TransformersBackend(cfg.transformers, cfg.max_new_tokens, device)
    raise ParamsError(f"captions.backend: unknown backend {cfg.backend!r} (attributes | transformers | openai)")
