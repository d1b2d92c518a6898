"""A real HTTP server on 127.0.0.1 that replays recorded responses and records requests.

Contract tests point the official clients at it: the client builds and sends its real
requests (paths, query strings, JSON and NDJSON bodies); the server answers each route with
the next recorded response (shapes from the systems' documentation, see fixtures/) and keeps
every request so the test can assert on what the client sent.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class ReplayServer:
    """Routes ``(METHOD, /path)`` to queues of replies; unmatched requests get a 599 error."""

    def __init__(self, default_headers: dict[str, str] | None = None) -> None:
        self.routes: dict[tuple[str, str], deque[Reply]] = {}
        self.sticky: dict[tuple[str, str], Reply] = {}
        self.requests: list[Recorded] = []
        self.default_headers = default_headers or {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                rec = Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                reply = server._next(rec)
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                headers = {**server.default_headers, **reply.headers}
                if reply.body is not None:
                    headers.setdefault("Content-Type", "application/json")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def add(self, method: str, path: str, *replies: Reply, sticky: bool = False) -> None:
        """Queue replies for a route; a sticky route answers every request with its reply."""
        key = (method.upper(), path)
        if sticky:
            self.sticky[key] = replies[0]
        else:
            self.routes.setdefault(key, deque()).extend(replies)

    def _next(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            key = (rec.method, rec.path)
            queue = self.routes.get(key)
            if queue:
                return queue.popleft()
            if key in self.sticky:
                return self.sticky[key]
        return Reply(599, {"error": f"no recorded reply for {rec.method} {rec.path}"})

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
