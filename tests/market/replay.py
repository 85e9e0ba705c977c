"""A real HTTP server on loopback that replays recorded AlphaVantage responses.

Tests script what each symbol gets, in order (the last reply repeats), then point the client
(or ``ATRIUM_ALPHAVANTAGE_URL``) at :attr:`ReplayServer.url`. Every request is recorded so
tests can count attempts and check what was sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0

    @classmethod
    def fixture(cls, name: str, *, status: int = 200, delay: float = 0.0) -> Reply:
        """Replay a recorded response body from ``tests/market/fixtures``."""
        return cls(status=status, body=(FIXTURES / name).read_bytes(), delay=delay)


@dataclass
class ReplayState:
    """Scripts per symbol and the requests received, shared with the handler threads."""

    scripts: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, symbol: str) -> Reply | None:
        with self.lock:
            script = self.scripts.get(symbol)
            if not script:
                return None
            return script.pop(0) if len(script) > 1 else script[0]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        state = self.server.state
        with state.lock:
            state.requests.append(query)
        reply = state.next_reply(query.get("symbol", ""))
        if reply is None:
            reply = Reply(status=404, body=b"unscripted symbol", content_type="text/plain")
        if reply.delay:
            # A slow upstream; released early when the test ends so no thread lingers.
            state.release.wait(reply.delay)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): exactly what a slow reply is for

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ReplayState


class ReplayServer:
    """Handle to a running replay server."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}/query"

    @property
    def requests(self) -> list[dict[str, str]]:
        """Query parameters of every request received since the last reset."""
        with self._server.state.lock:
            return list(self._server.state.requests)

    def script(self, symbol: str, *replies: Reply) -> None:
        """What ``symbol`` gets, in order; the last reply repeats."""
        with self._server.state.lock:
            self._server.state.scripts[symbol] = list(replies)

    def calls(self, symbol: str) -> int:
        """How many requests asked for ``symbol``."""
        return sum(1 for r in self.requests if r.get("symbol") == symbol)

    def reset(self) -> None:
        """Forget scripts and requests, and release any slow reply still waiting."""
        state = self._server.state
        state.release.set()
        with state.lock:
            state.scripts.clear()
            state.requests.clear()
            state.release = threading.Event()


@contextmanager
def replay_server() -> Iterator[ReplayServer]:
    """Serve on a free loopback port in a background thread for the duration."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ReplayState()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    handle = ReplayServer(server)
    try:
        yield handle
    finally:
        handle.reset()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
