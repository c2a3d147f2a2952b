"""A real HTTP server on 127.0.0.1 that serves covers and misbehaves on request, for download tests.

The server counts requests per path, so a test can see what was (not) asked for: skipped files, retries.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

import pytest
from PIL import Image

from genre.data.manifest import ManifestEntry


def jpeg(color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, "JPEG")
    return buf.getvalue()


COVER = jpeg()

Responder = Callable[[BaseHTTPRequestHandler], None]


def ok(body: bytes = COVER, delay: float = 0.0) -> Responder:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def status(code: int) -> Responder:
    return lambda handler: handler.send_error(code)


def truncated(body: bytes, declared: int) -> Responder:
    """Promise `declared` bytes, send `body`, then close the connection."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def without_length(body: bytes) -> Responder:
    """HTTP/1.0 style: no Content-Length, the body ends when the connection closes."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def trickle(body: bytes, every: float) -> Responder:
    """Send the body 10 bytes at a time: never idle long enough for a read timeout."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for start in range(0, len(body), 10):
            handler.wfile.write(body[start : start + 10])
            handler.wfile.flush()
            time.sleep(every)

    return respond


def redirect(location: str, code: int = 302) -> Responder:
    """Send the client to `location` (a URL, or a path on this server)."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


class CoverServer(ThreadingHTTPServer):
    """Serves `routes[path]`: the n-th request gets the n-th responder (the last one repeats)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, list[Responder]] = {}
        self.hits: Counter[str] = Counter()
        self.user_agents: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def add(self, line: int, relpath: str, *responders: Responder) -> ManifestEntry:
        path = f"/img/{relpath}"
        self.routes[path] = list(responders) or [ok()]
        return ManifestEntry(line=line, url=self.url(relpath), relpath=relpath)

    def url(self, relpath: str, host: str = "127.0.0.1") -> str:
        """Where `add` serves `relpath`; host `localhost` names this server by another host name (a cross-host
        redirect without a second server)."""
        return f"http://{host}:{self.server_address[1]}/img/{relpath}"

    def requests(self, entry: ManifestEntry) -> int:
        return self.hits[f"/img/{entry.relpath}"]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hung up on a slow or oversized response: expected here


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = cast(CoverServer, self.server)
        with server.lock:
            nth = server.hits[self.path]
            server.hits[self.path] += 1
            server.user_agents.add(self.headers.get("User-Agent", ""))
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            responders = server.routes.get(self.path, [status(404)])
            responders[min(nth, len(responders) - 1)](self)
        finally:
            with server.lock:
                server.in_flight -= 1

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cover_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[CoverServer]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # a proxy in the environment must not see the test server
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    httpd = CoverServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()
