"""JSON-lines logging on stdout: every line of a request carries its id, route and trace.

Each line passes through :func:`atrium.platform.redaction.redact` last, so a secret that some
code logs by mistake is masked before it reaches stdout.

The event loop never writes to stdout itself: :class:`BackgroundStreamHandler` formats a record
where it is logged (the request's context lives in that thread's context variables) and leaves
the finished line to a writer thread, which writes whatever has gathered in one system call.
A slow reader of stdout (a container runtime, a pipe) then delays log lines, not requests.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from contextvars import ContextVar
from typing import IO, Any

import orjson
from opentelemetry import trace as otel_trace
from starlette.types import Scope

from atrium.platform.redaction import redact, register_secrets

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# The ASGI scope of the request being served: once the router matched, it holds the route,
# so every later line of the request can name its template without routing code knowing.
request_scope_var: ContextVar[Scope | None] = ContextVar("request_scope", default=None)

UNMATCHED_ROUTE = "<unmatched>"

# Attributes every LogRecord has; anything else was passed via ``extra=`` and is emitted.
_RESERVED = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "color_message"}
)


# FastAPI records ``scope["route"]`` for its API routes only; plain Starlette routes and mounts
# (docs, the OpenAPI document, static files) are found by the endpoint they dispatched to.
_endpoint_templates: dict[Any, str] = {}


def register_route_templates(routes: Iterable[Any]) -> None:
    """Remember the templates of routes that do not announce themselves in the scope."""
    for route in routes:
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        template = getattr(route, "path_format", None)
        if endpoint is not None and template:
            _endpoint_templates[endpoint] = template


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/hr/{table}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path:
        return str(path)
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        try:
            return _endpoint_templates.get(endpoint, UNMATCHED_ROUTE)
        except TypeError:  # an unhashable endpoint was never registered
            return UNMATCHED_ROUTE
    return UNMATCHED_ROUTE


def request_context() -> dict[str, str]:
    """Request id, route (once routed) and trace/span ids of the current context."""
    context: dict[str, str] = {}
    request_id = request_id_var.get()
    if request_id is not None:
        context["request_id"] = request_id
    scope = request_scope_var.get()
    if scope is not None and ("route" in scope or "endpoint" in scope):
        context["route"] = route_template(scope)
    span_context = otel_trace.get_current_span().get_span_context()
    if span_context.is_valid:
        context["trace_id"] = format(span_context.trace_id, "032x")
        context["span_id"] = format(span_context.span_id, "016x")
    return context


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request context and extras."""

    # strftime is a tenth of a line's cost; the second it names changes far less often.
    _second = -1
    _second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """Serialise a record as one JSON line, secrets masked."""
        payload: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(request_context())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(payload, default=str).decode())


class TextFormatter(logging.Formatter):
    """Human-readable lines (``ATRIUM_LOG_JSON=false``), with the same masking."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Format a record as text, secrets masked."""
        record.request_id = request_id_var.get()
        return redact(super().format(record))


_handlers: weakref.WeakSet[BackgroundStreamHandler] = weakref.WeakSet()


class BackgroundStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose writes happen on a writer thread, a batch per system call.

    ``emit`` formats the record on the logging thread (where the request's context is) and
    appends the line to a deque: no lock, no signal, no system call. A writer thread empties it
    every ``interval`` seconds while lines come in (and sleeps while none do) and writes
    it in one call. It is woken at most once per idle period, never per line: waking a thread
    per line, and then competing with it for the GIL, cost more CPU than the writes it saved.
    Past ``max_pending`` waiting lines (stdout stuck) new lines are counted and dropped rather
    than blocking the caller or filling memory; the count is logged once the writer catches
    up. :meth:`flush` writes what is waiting; logging's shutdown calls it at exit.
    """

    def __init__(
        self, stream: IO[str] | None = None, *, interval: float = 0.02, max_pending: int = 100_000
    ) -> None:
        super().__init__(stream)
        self.interval = interval
        self.max_pending = max_pending
        self.dropped = 0
        self._reset()
        _handlers.add(self)

    def _reset(self) -> None:
        # deque: append (emit) and popleft (writer) are atomic, so neither needs a lock.
        self._pending: deque[str] = deque()
        self._idle = True
        self._wake = threading.Event()
        self._stopping = False
        self._writer: threading.Thread | None = None
        self._write_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        """Format now, write soon."""
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(line)
        if self._idle:
            self._idle = False
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._run, name="atrium-log-writer", daemon=True
                )
                self._writer.start()
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopping:
                time.sleep(self.interval)  # let the lines of a busy moment gather
                self.flush()
            self._idle = True
            if self._pending:  # appended before ``_idle`` was seen: take it on
                self._idle = False
                self._wake.set()

    def flush(self) -> None:
        """Write every line waiting now, in order."""
        with self._write_lock:
            pending = self._pending
            lines = [pending.popleft() for _ in range(len(pending))]
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                lines.append(self._dropped_line(dropped))
            if not lines:
                return
            try:
                self.stream.write(self.terminator.join(lines) + self.terminator)
                self.stream.flush()
            except Exception:  # a closed or broken stdout must not kill the writer
                sys.stderr.write("atrium: cannot write log lines\n")

    def _dropped_line(self, dropped: int) -> str:
        record = logging.makeLogRecord(
            {
                "name": "atrium.logging",
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": f"{dropped} log lines dropped: the output did not keep up",
            }
        )
        return self.format(record)

    def close(self) -> None:
        """Write what is waiting, stop the writer."""
        self.flush()
        writer = self._writer
        if writer is not None and writer.is_alive():
            self._stopping = True
            self._wake.set()
            writer.join(timeout=5)
        super().close()

    def _after_fork(self) -> None:
        # The parent writes what it had waiting; the child starts afresh (and, lazily, with a
        # writer of its own: threads do not survive a fork).
        self._reset()


# A fork while a writer thread is inside ``stream.write`` would leave the child a stream whose
# internal lock nobody will ever release: its first write (a gunicorn worker's first log line)
# would hang. So no write is in progress while a process forks (logging guards its own
# handler locks the same way).
def _before_fork() -> None:
    for handler in list(_handlers):
        handler._write_lock.acquire()


def _after_fork_in_parent() -> None:
    for handler in list(_handlers):
        handler._write_lock.release()


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._after_fork()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


def flush_logs() -> None:
    """Write every log line queued so far (what logging's shutdown does at exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(
    level: str = "INFO",
    *,
    json: bool = True,
    secrets: Iterable[str | None] = (),
    stream: IO[str] | None = None,
) -> None:
    """Install one handler on the root logger (idempotent); mask ``secrets`` in it.

    Lines go to ``stream`` (stdout by default) through a :class:`BackgroundStreamHandler`.
    """
    register_secrets(secrets)
    # No line shows the caller's file and line, thread or process, so logging need not find
    # them out for every record (a third of an access line's cost; the logging HOWTO's
    # "Optimization" section names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_atrium", False):
            root.removeHandler(handler)
            handler.close()
    handler = BackgroundStreamHandler(stream or sys.stdout)
    handler._atrium = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Uvicorn's own access log would duplicate ours (which carries route and request id).
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel("WARNING")
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
