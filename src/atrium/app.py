"""The application factory: settings → engines → middleware → routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from starlette.types import Scope

from atrium import __version__
from atrium.certificates.routes import router as certificates_router
from atrium.certificates.runtime import certificates_lifespan
from atrium.certificates.runtime import load_secrets as load_certificate_secrets
from atrium.hr.routes import router as hr_router
from atrium.market.routes import router as market_router
from atrium.platform.apikeys import require_scopes
from atrium.platform.cache import build_cache
from atrium.platform.charts_page import install_charts
from atrium.platform.db import create_engine, create_sessionmaker
from atrium.platform.db_metrics import run_db_monitor
from atrium.platform.docs import install_docs
from atrium.platform.errors import install_error_handlers
from atrium.platform.exposition import router as metrics_router
from atrium.platform.guard import GuardMiddleware, reset_in_process_state, start_guard
from atrium.platform.health import router as health_router
from atrium.platform.http_metrics import MetricsMiddleware
from atrium.platform.idempotency import IdempotencyMiddleware
from atrium.platform.logging import configure_logging, register_route_templates
from atrium.platform.metrics import BUILD_INFO
from atrium.platform.middleware import BodyLimitMiddleware, RequestContextMiddleware
from atrium.platform.migrate import upgrade
from atrium.platform.multiprocess import check_value_class, mark_this_process_dead
from atrium.platform.openapi import install_openapi
from atrium.platform.redaction import settings_secrets
from atrium.platform.tracing import fastapi_telemetry, setup_tracing
from atrium.platform.warmup import freeze_heap, open_pool
from atrium.settings import Settings, get_settings
from atrium.templates.routes import CACHED_READS as TEMPLATES_CACHED_READS
from atrium.templates.routes import router as templates_router

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("atrium")

# POSTs that create something: a retry with the same Idempotency-Key replays the first answer.
IDEMPOTENT_POSTS = (r"/templates", r"/hr/[^/]+/batch", r"/users", r"/users/[^/]+/certificates")

DESCRIPTION = """
Atrium brings HR data, certificates, market data and text templates behind one REST API.

Every error is an `application/problem+json` document (RFC 9457) with a stable `type`.
"""

OPENAPI_TAGS = [
    {
        "name": "hr",
        "description": "Departments, jobs and hired employees: ingest, backup, reports.",
    },
    {"name": "market", "description": "Daily stock prices from AlphaVantage."},
    {"name": "certificates", "description": "Users and their certificates."},
    {"name": "templates", "description": "Text templates."},
    {"name": "health", "description": "Liveness and readiness probes, Prometheus metrics."},
]


def create_app(
    settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build a fully wired application; tests pass their own settings (and tracer provider)."""
    settings = settings or get_settings()
    if settings.metrics_enabled:
        check_value_class()
    configure_logging(
        settings.log_level, json=settings.log_json, secrets=settings_secrets(settings)
    )
    tracing = setup_tracing(settings, tracer_provider)
    # Fail fast: without its keys (PostgreSQL and none configured) the service must not start.
    certificate_secrets = load_certificate_secrets(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = create_engine(settings)
            stack.push_async_callback(engine.dispose)
            if settings.should_auto_migrate:
                await upgrade(engine)
            app.state.engine = engine
            app.state.sessionmaker = create_sessionmaker(engine)
            app.state.redis = None
            if settings.redis_url:
                from redis.asyncio import Redis
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff

                # One immediate retry (a pooled connection may be stale after a Redis restart);
                # the default (10 retries with backoff) would stall every request for seconds
                # while Redis is down, instead of letting the platform degrade at once.
                redis: Any = Redis.from_url(
                    settings.redis_url,
                    socket_timeout=2.0,
                    socket_connect_timeout=2.0,
                    retry=Retry(NoBackoff(), 1),
                )
                stack.push_async_callback(redis.aclose)
                app.state.redis = redis
            # --- platform: cache, API keys, rate limits, idempotency -------------------------
            app.state.cache = build_cache(settings, app.state.redis)
            stack.push_async_callback(
                await start_guard(app.state, settings, engine, app.state.redis)
            )
            app.state.test_reset_hooks = [
                *getattr(app.state, "test_reset_hooks", []),
                lambda: reset_in_process_state(app.state),
            ]
            # ------------------------------------------------------------------------------
            # --- certificates: keys (refuses to start without them on PostgreSQL), webhooks ---
            await stack.enter_async_context(
                certificates_lifespan(app, settings, app.state.cache, certificate_secrets)
            )
            # --- observability: traces, DB probe, multiprocess metrics -------------------
            if tracing is not None:
                tracing.start(engine)
                stack.callback(tracing.stop)
            stack.callback(mark_this_process_dead)
            if settings.metrics_enabled:
                BUILD_INFO.labels(__version__).set(1)
                monitor = asyncio.create_task(run_db_monitor(engine, settings))
                stack.push_async_callback(_cancel, monitor)
            # Last: the pool's connections (opened beside start-up, not before it: a slow
            # database must not hold back /livez) and a frozen start-up heap.
            pool = asyncio.create_task(open_pool(engine, settings.db_pool_size))
            stack.push_async_callback(_cancel, pool)
            freeze_heap()
            log.info(
                "started",
                extra={
                    "version": __version__,
                    "database": engine.dialect.name,
                    "redis": bool(settings.redis_url),
                },
            )
            yield

    app = FastAPI(
        title="Atrium",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=fastapi_telemetry(tracing.provider if tracing else None),
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    install_docs(app)
    install_charts(app)

    app.include_router(health_router)
    if settings.metrics_enabled:
        app.include_router(metrics_router)
    # API-key scopes per router (the routers themselves know nothing about keys); the
    # certificates routes are guarded by their users' bearer tokens instead.
    app.include_router(hr_router, dependencies=[Depends(require_scopes("hr:read", "hr:write"))])
    app.include_router(market_router, dependencies=[Depends(require_scopes("market:read"))])
    app.include_router(certificates_router)
    app.include_router(
        templates_router,
        dependencies=[Depends(require_scopes("templates:read", "templates:write"))],
    )

    def body_limit(scope: Scope) -> int:
        # CSV uploads stream to the database, so they get the (much larger) upload limit.
        path: str = scope["path"]
        if path.startswith("/hr/") and path.endswith("/csv"):
            return settings.max_upload_bytes
        return settings.max_body_bytes

    # Outermost last: request context → metrics → guard (key, rate limit) → body limit →
    # idempotency.
    app.add_middleware(
        IdempotencyMiddleware, state=app.state, settings=settings, paths=IDEMPOTENT_POSTS
    )
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(
        GuardMiddleware, state=app.state, settings=settings, cached_reads=TEMPLATES_CACHED_READS
    )
    if settings.metrics_enabled:
        app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware, replica_name=settings.replica_name)
    register_route_templates(app.routes)
    return app


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
