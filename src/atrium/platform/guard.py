"""The front door (pure ASGI): who is calling, and may they call this often?

For every request except health, metrics and docs, :class:`GuardMiddleware`

1. identifies the caller: a valid ``X-API-KEY``, else anonymous, attributed to its client
   address (``X-Forwarded-For`` only from trusted proxies); an unknown or revoked key makes
   the caller anonymous and is answered 401 wherever a key is required;
2. counts the request in the caller's bucket: the key's (its own limit or
   ``ATRIUM_RATE_LIMIT`` per minute), the address's (anonymous), or, for registration and login
   without a key, the address's ``ATRIUM_AUTH_RATE_LIMIT`` bucket — 429 with ``Retry-After``;
3. leaves the caller in ``request.state.principal`` for :func:`require_scopes` (scopes are
   checked per router, where the routes are known) and adds ``RateLimit-*`` headers to the
   response.

With Redis, steps 1 and 2 are a single script call: one round trip, no database.

Domains may also declare :class:`CachedRead` rules: a keyed GET that matches one is looked up
in the cache within that same script call and, on a hit, answered right here from the cached
body and ETag (304 for a matching ``If-None-Match``), without entering the framework at all.
Misses, and requests the key's scopes do not allow, continue to the route as usual, which
loads, caches and answers, or refuses with the right problem.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.platform.apikeys import (
    KeyStore,
    anonymous_principal,
    build_key_store,
    check_scope,
    hash_key,
)
from atrium.platform.clientip import ClientIpResolver
from atrium.platform.conditional import if_none_match_hits, unpack_representation
from atrium.platform.errors import send_problem, send_unavailable
from atrium.platform.headers import header
from atrium.platform.idempotency import build_idempotency_store
from atrium.platform.metrics import CACHE_REQUESTS, RATE_LIMIT_REJECTIONS
from atrium.platform.ratelimit import (
    Decision,
    Limiter,
    LimiterUnavailable,
    MemoryLimiter,
    RedisHealth,
    RedisLimiter,
)
from atrium.platform.redis_scripts import PipelinedScripts
from atrium.settings import Settings

EXEMPT_PATHS = frozenset(
    {
        "/livez",
        "/readyz",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/charts",
    }
)
EXEMPT_PREFIXES = ("/static/",)
# Registration and login: open to anyone, so limited per client address (by path, so that
# it applies to whichever router serves them).
AUTH_ENDPOINTS = frozenset({("POST", "/users"), ("POST", "/auth/token")})


@dataclass(frozen=True)
class CachedRead:
    """A GET whose cache hits the front door may answer itself (see the module docstring).

    The cache entry must be a :func:`atrium.platform.conditional.pack_representation` of a JSON
    body, stored by the route under ``locate(match)`` = ``(namespace, key)``; ``locate`` returns
    ``None`` for paths the route must answer itself (e.g. an invalid id: 422).
    """

    path: re.Pattern[str]
    route: str
    scope: str
    cache_name: str
    locate: Callable[[re.Match[str]], tuple[str, str] | None]
    # What logs and metrics see as the matched route (a route template, never the raw path).
    route_stub: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stub = SimpleNamespace(path=self.route, path_format=self.route)
        object.__setattr__(self, "route_stub", stub)


def is_exempt(path: str) -> bool:
    """Paths that need no key and are not rate limited (probes, metrics, docs)."""
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


class GuardMiddleware:
    """API-key identification and rate limiting for every non-exempt request."""

    def __init__(
        self,
        app: ASGIApp,
        state: State,
        settings: Settings,
        cached_reads: Sequence[CachedRead] = (),
    ) -> None:
        self.app = app
        self.state = state
        self.settings = settings
        self.client_ip = ClientIpResolver(settings.trusted_proxies)
        self.anonymous = anonymous_principal(settings)
        self.cached_reads = tuple(cached_reads)

    def _cached_read(self, scope: Scope) -> tuple[CachedRead, str, str] | None:
        if scope["method"] != "GET":
            return None
        for rule in self.cached_reads:
            match = rule.path.fullmatch(scope["path"])
            if match is not None:
                located = rule.locate(match)
                return None if located is None else (rule, *located)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = header(scope, b"x-api-key")
        if key is not None:
            key = key.strip()
        limiter: Limiter = self.state.limiter
        state = scope.setdefault("state", {})
        decision: Decision | None = None
        try:
            if key:
                keys: KeyStore = self.state.api_keys
                default = self.settings.rate_limit
                read = self._cached_read(scope) if self.cached_reads else None
                cached: bytes | None = None
                if read is None:
                    record, decision = await keys.check(hash_key(key), limiter, default)
                else:
                    record, decision, cached = await keys.check_and_read(
                        hash_key(key), limiter, default, self.state.cache, read[1], read[2]
                    )
                if record is not None and record.active:
                    state["principal"] = record.principal()
                    bucket = "key"
                    if (
                        cached is not None
                        and read is not None
                        and state["principal"].allows(read[0].scope)
                        and (decision is None or decision.allowed)
                    ):
                        await _serve_cached(scope, send, read[0], cached, decision)
                        return
                else:
                    # Refused by require_scopes where a key is needed (401); elsewhere (a
                    # bearer-token route, registration) a stale key must not lock anyone out,
                    # so the request goes on as anonymous, limited by its address.
                    state["key_rejected"] = "unknown" if record is None else "revoked"
                    key = None
            if not key:
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
            await send_unavailable(scope, send, "the rate limiter")
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


async def _serve_cached(
    scope: Scope, send: Send, rule: CachedRead, value: bytes, decision: Decision | None
) -> None:
    """Answer a cache hit as the route would have: body, ETag, 304, rate-limit headers."""
    CACHE_REQUESTS.labels(rule.cache_name, "hit").inc()
    scope["route"] = rule.route_stub
    etag, body = unpack_representation(value)
    headers: list[tuple[bytes, bytes]] = [(b"etag", etag.encode())]
    if decision is not None:
        headers += decision.headers()
    for name, value in scope["headers"]:
        if name == b"if-none-match" and if_none_match_hits(value.decode("latin-1"), etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send, decision: Decision) -> Send:
    extra = decision.headers()

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return send_with_headers


async def start_guard(
    state: State, settings: Settings, engine: Any, redis: Any
) -> Callable[[], Awaitable[None]]:
    """Build the key store, the limiter and the idempotency store onto ``app.state``.

    Called from the lifespan once the engine and Redis exist; the middlewares read them
    from ``app.state`` per request. The keys are loaded at once, so that the first requests
    need no database and known keys work even if Redis is down from the start. Returns what
    the lifespan calls at shutdown.
    """
    health = RedisHealth(settings.rate_limit_fail_open)
    state.redis_health = health
    # The per-request scripts go over one pipelined connection, whatever the URL's transport
    # (TCP, TLS, Unix socket): see atrium.platform.redis_scripts.
    fast = PipelinedScripts(redis) if redis is not None else None
    state.limiter = (
        RedisLimiter(redis, settings.redis_prefix, health, fast)
        if redis is not None
        else MemoryLimiter()
    )
    state.api_keys = build_key_store(settings, engine, redis, health, fast)
    state.idempotency = build_idempotency_store(engine)
    state.require_scope = check_scope  # what /metrics uses for ATRIUM_METRICS_SCOPE
    await state.api_keys.warm()

    async def stop() -> None:
        if fast is not None:
            await fast.close()

    return stop


async def reset_in_process_state(state: State) -> None:
    """Forget in-process limits, key copies and cache entries (tests wipe storage under them)."""
    state.limiter.reset()
    state.api_keys.reset()
    cache = getattr(state, "cache", None)
    if cache is not None:
        cache.clear_local()
