"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the caption tests, with scripted faults."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """Answers deterministically from the request body; ``faults`` is a list consumed one per request.

    Fault names: ``500``, ``timeout`` (sleeps past the client's timeout), ``slow`` (sleeps ``slow_s``, then
    answers), ``malformed`` (not JSON), ``empty`` (empty message), ``shape`` (JSON without choices), ``401``,
    ``trickle`` (headers, then ``trickle_bytes`` bytes, one every ``trickle_s``), ``huge`` (``huge_bytes`` of JSON,
    no Content-Length; ``sent`` counts the bytes written), ``huge_cl`` (the same with its Content-Length),
    ``dirty`` (a caption with NUL and terminal escape characters), ``long`` (a caption of 50,000 ``x``).
    """

    DIRTY = "\x00\x1b[31ma red\x00 lesion\x1b[0m\x07 on skin\x1b"

    def __init__(self, slow_s: float = 0.3, hang_s: float = 3.0, trickle_s: float = 2.0, trickle_bytes: int = 1000,
                 huge_bytes: int = 300 << 20) -> None:
        self.requests = 0
        self.trickle_s, self.trickle_bytes, self.huge_bytes, self.sent = trickle_s, trickle_bytes, huge_bytes, 0
        self.faults: list[str] = []
        self.slow_s, self.hang_s = slow_s, hang_s
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.requests += 1
                    fault = server.faults.pop(0) if server.faults else "ok"
                    server.auth.append(self.headers.get("Authorization"))
                    server.bodies.append(json.loads(raw))
                if fault == "timeout":
                    time.sleep(server.hang_s)
                if fault == "slow":
                    time.sleep(server.slow_s)
                status, body = 200, None
                if fault in ("500", "401"):
                    status, body = int(fault), b'{"error": "scripted"}'
                elif fault == "malformed":
                    body = b'{"choices": [ {"message": '
                elif fault == "empty":
                    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "  "}}]}).encode()
                elif fault == "shape":
                    body = json.dumps({"result": "a caption in the wrong place"}).encode()
                elif fault in ("dirty", "long"):
                    text = server.DIRTY if fault == "dirty" else "x" * 50_000
                    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                elif fault in ("trickle", "huge", "huge_cl"):
                    self._stream(fault)
                    return
                if body is None:
                    text = "caption " + hashlib.sha256(raw).hexdigest()[:16]
                    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, fault: str) -> None:
                """A reply that never finishes in time (trickle) or is far too large (huge)."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    if fault != "huge":
                        length = server.trickle_bytes if fault == "trickle" else server.huge_bytes
                        self.send_header("Content-Length", str(length))
                    self.end_headers()
                    self.wfile.flush()
                    if fault == "trickle":
                        for _ in range(server.trickle_bytes):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(server.trickle_s)
                        return
                    head = b'{"choices": [{"message": {"role": "assistant", "content": "'
                    self.wfile.write(head)
                    block = b"y" * (1 << 20)
                    while server.sent < server.huge_bytes:
                        self.wfile.write(block)
                        with server._lock:
                            server.sent += len(block)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
