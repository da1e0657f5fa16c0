"""A real HTTP server on 127.0.0.1 that records what it is sent: GitHub's API and chat webhooks, for tests.

It answers like the services it stands in for: POST .../deployments creates a deployment
(201 with a new id), deployment and commit statuses answer 201, Discord 204, Slack 200 "ok".
It can also answer every request with an error status, or answer late.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def state(self) -> str | None:
        """The state a GitHub status call sets."""
        return self.body.get("state") if isinstance(self.body, dict) else None


_CREATE_DEPLOYMENT = re.compile(r"/repos/[^/]+/[^/]+/deployments$")
FIRST_GITHUB_ID = 7001


class Recorder:
    """A ThreadingHTTPServer on a free loopback port; a context manager that stops it on exit."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail_with: int | None = None
        """Answer every request with this status (e.g. 500) instead of success."""
        self.delay = 0.0
        """Seconds to wait before answering."""
        self._lock = threading.Lock()
        self._next_id = FIRST_GITHUB_ID
        self._stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self.server.serve_forever, name="recorder", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stopping.set()  # late answers stop waiting
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def record(self, call: Call) -> tuple[int, Any]:
        """Keep the call; return the status and JSON body to answer it with."""
        with self._lock:
            self.calls.append(call)
            if self.fail_with is not None:
                return self.fail_with, {"message": "the recorder was told to fail"}
            if _CREATE_DEPLOYMENT.search(call.path):
                self._next_id += 1
                return 201, {"id": self._next_id - 1, "sha": call.body.get("ref")}
        if "/discord/" in call.path:
            return 204, None
        if "/slack/" in call.path:
            return 200, "ok"
        return 201, {"state": call.state}

    def wait_late(self) -> None:
        if self.delay:
            self._stopping.wait(self.delay)

    def under(self, prefix: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.path.startswith(prefix)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is what some tests are about: not worth a traceback


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            body = json.loads(raw) if raw else None
            status, reply = recorder.record(Call("POST", self.path, dict(self.headers.items()), body))
            recorder.wait_late()
            try:
                self._answer(status, reply)
            except OSError:
                pass  # the client gave up waiting (its timeout): nothing to answer

        def _answer(self, status: int, reply: Any) -> None:
            self.send_response(status)
            if reply is None:
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
            self.send_header("Content-Type", "text/plain" if isinstance(reply, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads .calls, not stderr

    return Handler
