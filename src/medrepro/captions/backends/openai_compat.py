"""The ``openai`` backend: any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, a hosted API).

Standard library only (http.client). Requests run with bounded concurrency. ``timeout_s`` is each try's whole budget
(connect, wait, reply: a server that trickles its reply is cut off at the deadline). A timeout, a connection error,
HTTP 408 / 429 / 5xx, a reply over ``max_reply_bytes`` (not read further), or one that is not the expected JSON, has
no text or is longer than ``max_new_tokens`` allows, is retried with exponential backoff; after the last try the
request's Answer carries the reason and the URL (the caption layer records it and asks again next run; it caches only
accepted captions, stripped of control characters). The API key is read from the environment variable
``api_key_env`` and appears in no message or log.
"""

from __future__ import annotations

import base64
import http.client
import json
import mimetypes
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from medrepro.captions.backends.base import MAX_CHARS_PER_TOKEN, Answer, Request, check_text, clean_text
from medrepro.errors import ParamsError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
CHUNK = 1 << 16


def max_reply_bytes(max_new_tokens: int) -> int:
    """The most bytes read of one reply: 1 MiB of JSON around a caption that max_new_tokens allows, each character
    JSON-escaped (\\uXXXX, 6 bytes)."""
    return (1 << 20) + 6 * MAX_CHARS_PER_TOKEN * max_new_tokens


class _Retry(Exception):
    """A failure worth another try."""


class OpenAIBackend:
    """Chat completions at ``{base_url}/chat/completions``; images go as base64 data URLs."""

    name = "openai"

    def __init__(self, cfg, max_new_tokens: int) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self.max_new_tokens = max_new_tokens
        self.max_reply_bytes = max_reply_bytes(max_new_tokens)
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

    def _read(self, resp: http.client.HTTPResponse, expired: threading.Event) -> bytes:
        """The reply body, at most ``max_reply_bytes`` of it (a longer one is not read further)."""
        cap = self.max_reply_bytes
        length = resp.getheader("Content-Length", "")
        if length.isdigit() and int(length) > cap:
            raise _Retry(f"reply of {int(length):,} bytes is over the {cap:,}-byte limit (not read)")
        data = bytearray()
        while not expired.is_set() and (chunk := resp.read(min(CHUNK, cap + 1 - len(data)))):
            data += chunk
            if len(data) > cap:
                raise _Retry(f"reply is over the {cap:,}-byte limit (not read further)")
        return bytes(data)

    def _post(self, body: bytes) -> bytes:
        """One try: the reply body, or _Retry / ValueError. A watchdog shuts the socket at ``timeout_s``, so the
        whole try (connect, send, wait, read) ends by then however slowly the server answers."""
        p, budget = self._parts, self.cfg.timeout_s
        conn_cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(p.hostname, p.port, timeout=budget)
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        expired, sock = threading.Event(), []  # the socket, kept: the connection drops it once a reply is read

        def expire() -> None:
            expired.set()
            for s in sock:
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the blocked read in this try's thread
                except OSError:
                    pass

        timer = threading.Timer(budget, expire)
        timer.daemon = True
        timer.start()
        try:
            conn.connect()
            sock.append(conn.sock)
            if expired.is_set():
                raise TimeoutError
            conn.request("POST", f"{p.path}/chat/completions", body=body, headers=headers)
            resp = conn.getresponse()
            data = self._read(resp, expired)
            if expired.is_set():
                raise TimeoutError
        except (TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise _Retry(f"no complete answer within timeout_s={budget} s") from exc
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from exc
        finally:
            timer.cancel()
            conn.close()
        if resp.status in RETRY_STATUS:
            raise _Retry(f"HTTP {resp.status}")
        if resp.status >= 400:
            raise ValueError(f"HTTP {resp.status}: {clean_text(data[:200].decode(errors='replace'))}")
        return data

    def parse(self, data: bytes) -> Answer:
        """The message text of a chat-completions reply; a malformed, empty or overlong reply is an error Answer."""
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
        return check_text(text, "reply", self.max_new_tokens)

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
