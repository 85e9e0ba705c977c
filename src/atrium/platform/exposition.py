"""``GET /metrics`` in Prometheus text format, correct with one worker process or many.

With several workers (see :mod:`atrium.platform.multiprocess`) whichever worker serves the
scrape adds up the samples every worker wrote to ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import lru_cache

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from atrium.platform.db_metrics import sample_pool
from atrium.platform.errors import Forbidden, problem_responses
from atrium.platform.multiprocess import MULTIPROC_ENV
from atrium.settings import Settings

# Checks that the caller's API key has a scope; the API-key module installs one as
# ``app.state.require_scope`` so that ``ATRIUM_METRICS_SCOPE`` can protect this endpoint.
ScopeCheck = Callable[[Request, str], Awaitable[None]]

_EXAMPLE = """\
# HELP atrium_http_requests_total HTTP requests served.
# TYPE atrium_http_requests_total counter
atrium_http_requests_total{method="GET",route="/livez",status="200"} 42.0
"""

router = APIRouter(tags=["health"])


@lru_cache(maxsize=1)
def _multiprocess_registry(path: str) -> CollectorRegistry:
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def metrics_registry() -> CollectorRegistry:
    """All workers' samples in multiprocess mode, else this process's default registry."""
    path = os.environ.get(MULTIPROC_ENV)
    return _multiprocess_registry(path) if path else REGISTRY


def render_metrics() -> bytes:
    """The exposition text of :func:`metrics_registry`."""
    return generate_latest(metrics_registry())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        },
        **problem_responses(403),
    },
)
async def metrics(request: Request) -> PlainTextResponse:
    """Every metric of the service (all worker processes added up), for Prometheus to scrape."""
    settings: Settings = request.app.state.settings
    if settings.metrics_scope:
        check: ScopeCheck | None = getattr(request.app.state, "require_scope", None)
        if check is None:
            # Fail closed: a scope was asked for and nothing here can verify it.
            raise Forbidden("ATRIUM_METRICS_SCOPE is set but no API-key check is installed")
        await check(request, settings.metrics_scope)
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        sample_pool(engine)
    body = await anyio.to_thread.run_sync(render_metrics)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
