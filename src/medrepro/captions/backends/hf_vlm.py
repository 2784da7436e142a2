"""The ``transformers`` backend: a vision-language model through transformers' image-text-to-text API.

Any checkpoint ``AutoModelForImageTextToText`` and ``AutoProcessor`` load (Qwen-VL, LLaVA, SmolVLM class), from the
hub or a local folder; batched greedy ``generate``, on the GPU when there is one. A model that cannot be loaded
stops the stage with a message naming what was looked for (never a silent fallback).
"""

from __future__ import annotations

from pathlib import Path

from medrepro.captions.backends.base import Answer, Request, check_text
from medrepro.errors import WeightsError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class TransformersBackend:
    """Batched greedy generation; step 2 (no image) runs as text-only chat turns."""

    name = "transformers"

    def __init__(self, cfg, max_new_tokens: int, device: str = "auto") -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = cfg.model
        self.batch_size = cfg.batch_size
        self.max_new_tokens = max_new_tokens
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        where = "local folder" if Path(cfg.model).is_dir() else "hub id (or its local cache)"
        try:
            self.processor = AutoProcessor.from_pretrained(cfg.model)
            self.net = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=getattr(torch, DTYPES[dtype]))
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"captions.transformers.model: could not load a processor and image-text-to-text "
                               f"model from {cfg.model!r} ({where}): {exc}") from exc
        self.net.to(self.device).eval()
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # batched generation continues every row at its end

    def _chat(self, req: Request) -> str:
        content = ([{"type": "image"}] if req.image is not None else []) + [{"type": "text", "text": req.prompt}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def _generate(self, batch: list[Request]) -> list[Answer]:
        import torch
        from PIL import Image

        texts = [self._chat(r) for r in batch]
        kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
        if batch[0].image is not None:
            images = []
            for r in batch:
                with Image.open(r.image) as img:
                    images.append(img.convert("RGB"))
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        with torch.inference_mode():
            out = self.net.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        decoded = self.processor.batch_decode(new, skip_special_tokens=True)
        return [check_text(t, f"{self.model} generate", self.max_new_tokens) for t in decoded]

    def answer(self, requests: list[Request]) -> list[Answer]:
        out: dict[int, Answer] = {}
        for with_image in (False, True):  # text-only and image turns go in separate batches
            idx = [i for i, r in enumerate(requests) if (r.image is not None) == with_image]
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s:s + self.batch_size]
                for i, ans in zip(chunk, self._generate([requests[i] for i in chunk]), strict=True):
                    out[i] = ans
        return [out[i] for i in range(len(requests))]

    def close(self) -> None:
        self.net.to("cpu")
