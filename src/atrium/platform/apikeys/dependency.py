"""The request side of API keys: the ``X-API-KEY`` scheme and the scope-checking dependency.

The guard middleware (:mod:`atrium.platform.guard`) has usually identified the caller already;
the dependency here only decides whether that caller may use the route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from atrium.platform.apikeys.model import HEADER, Principal, anonymous_principal, hash_key
from atrium.platform.apikeys.store import KeyStore
from atrium.platform.errors import Forbidden, Unauthorized
from atrium.platform.metrics import API_KEY_FAILURES
from atrium.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

API_KEY_SCHEME = APIKeyHeader(
    name=HEADER,
    scheme_name="ApiKey",
    description="An API key (`atrium apikeys create`); its scopes decide what it may do.",
    auto_error=False,
)


def unauthorized(detail: str) -> Unauthorized:
    """401 with the challenge naming our header."""
    return Unauthorized(detail, headers={"WWW-Authenticate": f'APIKey header="{HEADER}"'})


async def authenticate(request: Request, key: str | None) -> Principal:
    """The caller of a request the guard middleware did not see (no rate limiting here)."""
    settings: Settings = request.app.state.settings
    if not key:
        return anonymous_principal(settings)
    store: KeyStore = request.app.state.api_keys
    record = await store.lookup(hash_key(key.strip()))
    if record is None or not record.active:
        API_KEY_FAILURES.labels("unknown" if record is None else "revoked").inc()
        raise unauthorized("unknown or revoked API key")
    return record.principal()


def require_scopes(
    read: str, write: str | None = None
) -> Callable[[Request, str | None], Awaitable[Principal]]:
    """A dependency demanding ``read`` for GET/HEAD/OPTIONS and ``write`` for the rest.

    Include a router with ``dependencies=[Depends(require_scopes("hr:read", "hr:write"))]``:
    the router's code needs no change, and OpenAPI declares the ``X-API-KEY`` scheme.
    """

    async def guard(
        request: Request, api_key: Annotated[str | None, Security(API_KEY_SCHEME)] = None
    ) -> Principal:
        """401 without a (valid) key, 403 when the key lacks the scope."""
        state = request.scope.get("state", {})
        rejected = state.get("key_rejected")
        if rejected is not None:
            API_KEY_FAILURES.labels(rejected).inc()
            raise unauthorized("unknown or revoked API key")
        principal: Principal | None = state.get("principal")
        if principal is None:
            principal = await authenticate(request, api_key)
        needed = read if request.method in SAFE_METHODS else (write or read)
        if principal.allows(needed):
            return principal
        if principal.anonymous:
            API_KEY_FAILURES.labels("missing").inc()
            raise unauthorized(f"this endpoint needs an API key with the scope {needed!r}")
        API_KEY_FAILURES.labels("scope").inc()
        raise Forbidden(f"this API key lacks the scope {needed!r}", required_scope=needed)

    return guard


async def check_scope(request: Request, scope: str) -> None:
    """401/403 unless the caller's key has ``scope``; for endpoints outside guarded routers.

    Installed as ``app.state.require_scope`` (``/metrics`` uses it for ``ATRIUM_METRICS_SCOPE``).
    """
    await require_scopes(scope)(request, request.headers.get(HEADER))


def principal_of(request: Request) -> Principal | None:
    """The caller as established by the guard middleware (``None`` on exempt paths)."""
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    return principal
