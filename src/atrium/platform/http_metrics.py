"""Pure ASGI middleware counting requests by route template, method and status.

Labels stay bounded: the route is the matched template (``/hr/{table}``) or ``<unmatched>``,
never the raw path; an unusual method becomes ``OTHER``.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.platform.logging import route_template
from atrium.platform.metrics import HTTP_EXCEPTIONS, HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REQUESTS

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Request count, latency histogram, in-flight gauge and unhandled exceptions."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
        # Without a response start the server error handler answers 500 after us.
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            HTTP_EXCEPTIONS.labels(route_template(scope), type(exc).__name__).inc()
            raise
        finally:
            HTTP_IN_FLIGHT.dec()
            route = route_template(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
