"""The front door (pure ASGI): who is calling, and may they call this often?

For every request except health, metrics and docs, :class:`GuardMiddleware`

1. identifies the caller: a valid ``X-API-KEY`` (an unknown or revoked key is a 401 right
   here), else anonymous, attributed to its client address (``X-Forwarded-For`` only from
   trusted proxies);
2. counts the request in the caller's bucket: the key's (its own limit or
   ``ATRIUM_RATE_LIMIT`` per minute), the address's (anonymous), or, for registration and login
   without a key, the address's ``ATRIUM_AUTH_RATE_LIMIT`` bucket — 429 with ``Retry-After``;
3. leaves the caller in ``request.state.principal`` for :func:`require_scopes` (scopes are
   checked per router, where the routes are known) and adds ``RateLimit-*`` headers to the
   response.

With Redis, steps 1 and 2 are a single script call: one round trip, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.platform.apikeys import KeyStore, anonymous_principal, hash_key
from atrium.platform.clientip import ClientIpResolver
from atrium.platform.errors import PROBLEM_MEDIA_TYPE, problem_type
from atrium.platform.metrics import API_KEY_FAILURES, RATE_LIMIT_REJECTIONS
from atrium.platform.ratelimit import Decision, Limiter, LimiterUnavailable
from atrium.settings import Settings

EXEMPT_PATHS = frozenset(
    {"/livez", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
EXEMPT_PREFIXES = ("/static/",)
# Registration and login: open to anyone, so limited per client address (by path, so that
# it applies to whichever router serves them).
AUTH_ENDPOINTS = frozenset({("POST", "/users"), ("POST", "/auth/token")})


def is_exempt(path: str) -> bool:
    """Paths that need no key and are not rate limited (probes, metrics, docs)."""
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


async def send_problem(
    scope: Scope,
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    """Answer with a problem document from inside a pure ASGI middleware."""
    body = orjson.dumps(
        {
            "type": problem_type(slug),
            "title": title,
            "status": status,
            "detail": detail,
            "instance": scope.get("path", ""),
        }
    )
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if isinstance(headers, Mapping):
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    else:
        raw += list(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """API-key identification and rate limiting for every non-exempt request."""

    def __init__(self, app: ASGIApp, state: State, settings: Settings) -> None:
        self.app = app
        self.state = state
        self.settings = settings
        self.client_ip = ClientIpResolver(settings.trusted_proxies)
        self.anonymous = anonymous_principal(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value.decode("latin-1").strip()
                break
        limiter: Limiter = self.state.limiter
        state = scope.setdefault("state", {})
        try:
            if key:
                keys: KeyStore = self.state.api_keys
                record, decision = await keys.check(
                    hash_key(key), limiter, self.settings.rate_limit
                )
                if record is None or not record.active:
                    API_KEY_FAILURES.labels("unknown" if record is None else "revoked").inc()
                    await send_problem(
                        scope,
                        send,
                        401,
                        "unauthorized",
                        "Unauthorized",
                        "unknown or revoked API key",
                        {"WWW-Authenticate": 'APIKey header="X-API-KEY"'},
                    )
                    return
                state["principal"] = record.principal()
                bucket = "key"
            else:
                ip = self.client_ip(scope)
                state["client_ip"] = ip
                state["principal"] = self.anonymous
                if (scope["method"], scope["path"]) in AUTH_ENDPOINTS:
                    bucket = "auth"
                    decision = await limiter.hit(f"auth:{ip}", self.settings.auth_rate_limit)
                else:
                    bucket = "anonymous"
                    decision = await limiter.hit(f"ip:{ip}", self.settings.rate_limit)
        except LimiterUnavailable:
            await send_problem(
                scope,
                send,
                503,
                "unavailable",
                "Service Unavailable",
                "the rate limiter cannot be reached; retry shortly",
                {"Retry-After": "1"},
            )
            return
        if decision is None:  # backend down and failing open: serve, unlimited
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            RATE_LIMIT_REJECTIONS.labels(bucket).inc()
            await send_problem(
                scope,
                send,
                429,
                "rate-limited",
                "Too Many Requests",
                f"rate limit of {decision.limit} requests per minute exceeded",
                decision.headers(),
            )
            return
        await self.app(scope, receive, _with_headers(send, decision))


def _with_headers(send: Send, decision: Decision) -> Send:
    extra = decision.headers()

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return send_with_headers


def start_guard(state: State, settings: Settings, engine: Any, redis: Any) -> None:
    """Build the key store, the limiter and the idempotency store onto ``app.state``.

    Called from the lifespan once the engine and Redis exist; the middlewares read them
    from ``app.state`` per request.
    """
    from atrium.platform.apikeys import build_key_store
    from atrium.platform.idempotency import build_idempotency_store
    from atrium.platform.ratelimit import MemoryLimiter, RedisHealth, RedisLimiter

    health = RedisHealth(settings.rate_limit_fail_open)
    state.redis_health = health
    state.limiter = (
        RedisLimiter(redis, settings.redis_prefix, health) if redis is not None else MemoryLimiter()
    )
    state.api_keys = build_key_store(settings, engine, redis, health)
    state.idempotency = build_idempotency_store(settings, engine, redis)


async def reset_in_process_state(state: State) -> None:
    """Forget in-process limits, key copies and cache entries (tests wipe storage under them)."""
    state.limiter.reset()
    state.api_keys.reset()
    cache = getattr(state, "cache", None)
    if cache is not None:
        cache.clear_local()
