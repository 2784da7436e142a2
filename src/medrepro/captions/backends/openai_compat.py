"""The ``openai`` backend: any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, a hosted API).

Standard library only (http.client). Requests run with bounded concurrency; a timeout, a connection error, HTTP 408 /
429 / 5xx, or a reply that is not the expected JSON, or has no text, is retried with exponential backoff; after the
last try the request's Answer carries the reason and the URL (the caption layer records it and asks again next run).
The API key is read from the environment variable ``api_key_env`` and appears in no message or log.
"""

from __future__ import annotations

import base64
import http.client
import json
import mimetypes
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from medrepro.captions.backends.base import Answer, Request, check_text
from medrepro.errors import ParamsError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Retry(Exception):
    """A failure worth another try."""


class OpenAIBackend:
    """Chat completions at ``{base_url}/chat/completions``; images go as base64 data URLs."""

    name = "openai"

    def __init__(self, cfg, max_new_tokens: int) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self.max_new_tokens = max_new_tokens
        parts = urlsplit(cfg.base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ParamsError(f"captions.openai.base_url: not an http(s) URL: {cfg.base_url!r}")
        self._parts = parts
        self.url = f"{cfg.base_url.rstrip('/')}/chat/completions"
        self._key = os.environ.get(cfg.api_key_env)
        self._pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="openai")

    # ------------------------------------------------------------------------------------------------ protocol
    def answer(self, requests: list[Request]) -> list[Answer]:
        return list(self._pool.map(self._one, requests))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ----------------------------------------------------------------------------------------------- internals
    def payload(self, req: Request) -> dict:
        content: list[dict] = [{"type": "text", "text": req.prompt}]
        if req.image is not None:
            mime = mimetypes.guess_type(req.image.name)[0] or "image/png"
            data = base64.b64encode(req.image.read_bytes()).decode()
            content.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
        return {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_new_tokens, "temperature": self.cfg.temperature}

    def _post(self, body: bytes) -> bytes:
        p = self._parts
        conn_cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(p.hostname, p.port, timeout=self.cfg.timeout_s)
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        try:
            conn.request("POST", f"{p.path}/chat/completions", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except TimeoutError as exc:
            raise _Retry(f"no answer within {self.cfg.timeout_s} s") from exc
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from exc
        finally:
            conn.close()
        if resp.status in RETRY_STATUS:
            raise _Retry(f"HTTP {resp.status}")
        if resp.status >= 400:
            raise ValueError(f"HTTP {resp.status}: {data[:200].decode(errors='replace')}")
        return data

    @staticmethod
    def parse(data: bytes) -> Answer:
        """The message text of a chat-completions reply; a malformed or empty reply is an error Answer."""
        try:
            reply = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return Answer(error=f"reply is not JSON: {data[:80]!r}")
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Answer(error=f"reply has no choices[0].message.content: {json.dumps(reply)[:120]}")
        if isinstance(text, list):  # content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict)) or None
        return check_text(text, "reply")

    def _one(self, req: Request) -> Answer:
        body = json.dumps(self.payload(req)).encode()
        reason = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            try:
                ans = self.parse(self._post(body))
            except _Retry as exc:
                reason = str(exc)
                continue
            except ValueError as exc:  # a 4xx other than 408/429: asking again will not help
                return Answer(error=f"{self.url}: {exc}")
            if ans.text is not None:
                return ans
            reason = ans.error or "?"
        return Answer(error=f"{self.url}: {reason} (after {self.cfg.retries + 1} tries)")
