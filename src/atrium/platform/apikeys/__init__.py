"""API keys: generation, hashed storage (Redis hash or SQL table), scopes, the route guard.

A key is shown once, when created; only its SHA-256 is stored: in the Redis hash
``{ATRIUM_REDIS_PREFIX}sec_apikeys`` when Redis is configured (:mod:`.redis_store`), else in
the ``api_keys`` table (:mod:`.sql_store`). Checking a key never costs a database round trip:
the Redis store checks and counts in the request's one script call, the SQL store answers
from an in-process copy (:mod:`.snapshot`). :mod:`.model` says what a key is, :mod:`.store`
what every store does, :mod:`.dependency` how routes demand scopes, :mod:`.cli` the commands.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.apikeys.dependency import (
    API_KEY_SCHEME,
    authenticate,
    check_scope,
    principal_of,
    require_scopes,
    unauthorized,
)
from atrium.platform.apikeys.model import (
    ADMIN,
    HEADER,
    SCOPES,
    ApiKey,
    Principal,
    anonymous_principal,
    generate_key,
    hash_key,
    validate_scopes,
)
from atrium.platform.apikeys.redis_store import RedisKeyStore
from atrium.platform.apikeys.sql_store import ApiKeyRow, SqlKeyStore
from atrium.platform.apikeys.store import KeyCheck, KeyCheckRead, KeyStore
from atrium.platform.ratelimit import RedisHealth
from atrium.platform.redis_scripts import PipelinedScripts
from atrium.settings import Settings

__all__ = [
    "ADMIN",
    "API_KEY_SCHEME",
    "HEADER",
    "SCOPES",
    "ApiKey",
    "ApiKeyRow",
    "KeyCheck",
    "KeyCheckRead",
    "KeyStore",
    "Principal",
    "RedisKeyStore",
    "SqlKeyStore",
    "anonymous_principal",
    "authenticate",
    "build_key_store",
    "check_scope",
    "generate_key",
    "hash_key",
    "principal_of",
    "require_scopes",
    "unauthorized",
    "validate_scopes",
]


def build_key_store(
    settings: Settings,
    engine: AsyncEngine,
    redis: Any,
    health: RedisHealth,
    fast: PipelinedScripts | None = None,
) -> KeyStore:
    """Redis when configured, else the SQL table (with a change marker when embedded)."""
    if redis is not None:
        return RedisKeyStore(redis, settings.redis_prefix, health, fast)
    marker = settings.data_dir / "apikeys.changed" if settings.is_embedded else None
    return SqlKeyStore(engine, marker)
