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
    answers), ``malformed`` (not JSON), ``empty`` (empty message), ``shape`` (JSON without choices), ``401``.
    """

    def __init__(self, slow_s: float = 0.3, hang_s: float = 3.0) -> None:
        self.requests = 0
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

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
