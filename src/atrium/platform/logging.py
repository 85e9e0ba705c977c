"""JSON-lines logging on stdout: every line of a request carries its id, route and trace.

Each line passes through :func:`atrium.platform.redaction.redact` last, so a secret that some
code logs by mistake is masked before it reaches stdout.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

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

    def format(self, record: logging.LogRecord) -> str:
        """Serialise a record as one JSON line, secrets masked."""
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


def configure_logging(
    level: str = "INFO", *, json: bool = True, secrets: Iterable[str | None] = ()
) -> None:
    """Install one stdout handler on the root logger (idempotent); mask ``secrets`` in it."""
    register_secrets(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_atrium", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
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
