"""Pure ASGI middleware for the hot path (no ``BaseHTTPMiddleware``: it costs a task per request).

* :class:`RequestContextMiddleware` assigns the request id, echoes it, and writes the access log.
* :class:`BodyLimitMiddleware` refuses bodies over the configured size before a handler reads them.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.platform.errors import EXCEPTION_LOGGED, PROBLEM_MEDIA_TYPE, problem_type
from atrium.platform.headers import header
from atrium.platform.logging import request_id_var, request_scope_var, route_template

__all__ = ["BodyLimitMiddleware", "RequestContextMiddleware", "route_template"]

access_log = logging.getLogger("atrium.access")
error_log = logging.getLogger("atrium.errors")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    """Request id in and out, plus one structured access-log line per request."""

    def __init__(self, app: ASGIApp, replica_name: str | None = None) -> None:
        self.app = app
        self.replica = replica_name.encode() if replica_name else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )
        token = request_id_var.set(request_id)
        scope_token = request_scope_var.set(scope)
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if self.replica is not None:
                    headers.append((b"x-atrium-replica", self.replica))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Logged here, not by the 500 handler outside us, so the line keeps the request's
            # id, route and trace; the handler sees the flag and only renders the problem.
            error_log.exception("unhandled error", extra={"path": scope["path"]})
            scope[EXCEPTION_LOGGED] = True
            raise
        finally:
            access_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route_template(scope),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_scope_var.reset(scope_token)
            request_id_var.reset(token)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 as a problem document when a body is larger than allowed for its route."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await _send_413(scope, send, limit)
                    return
                break
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await _send_413(scope, send, limit)


async def _send_413(scope: Scope, send: Send, limit: int) -> None:
    body = orjson.dumps(
        {
            "type": problem_type("payload-too-large"),
            "title": "Content Too Large",
            "status": 413,
            "detail": f"request body exceeds {limit} bytes",
            "instance": scope.get("path", ""),
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
