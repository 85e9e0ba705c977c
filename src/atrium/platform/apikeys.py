"""API keys: generation, hashed storage (Redis hash or SQL table), scopes, the route guard.

A key is shown once, when created; only its SHA-256 is stored. With Redis the records live in
the hash ``{ATRIUM_REDIS_PREFIX}sec_apikeys`` (field = sha256 hex of the key, value = JSON with
id, owner, scopes, rate-limit override, created, revoked) where existing deployments keep
them; without Redis in the ``api_keys`` table.

Checking a key never costs a database round trip:

* Redis: the request's one rate-limit script also does the ``HGET`` (see
  :mod:`atrium.platform.guard`), so a revocation is effective on the very next request. A
  snapshot of the hash, refreshed in the background, lets known keys keep working while Redis
  is unreachable (nobody can revoke a key then either, revocations go through Redis).
* SQL: the table is held in memory. A change made by this process reloads it at once; one made
  by another process on the same machine (the CLI against the embedded default) touches a
  marker file that every request ``stat``s, so it is seen on the next request too; anything
  else (PostgreSQL without Redis, several machines) is picked up by a reload every few seconds.
  An unknown key triggers a reload, at most once a second, so a key created elsewhere works
  immediately without letting random keys hammer the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, cast

import orjson
from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy import Integer, String, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from atrium.platform.cache import Cache, RedisBackend
from atrium.platform.db import Base
from atrium.platform.errors import Forbidden, Unauthorized
from atrium.platform.fastredis import PipelinedScripts, Script
from atrium.platform.metrics import API_KEY_FAILURES
from atrium.platform.ratelimit import (
    GCRA_LUA,
    PERIOD_SECONDS,
    Decision,
    Limiter,
    RedisHealth,
    RedisLimiter,
)
from atrium.platform.sqltypes import LongText, UtcDateTime, server_precise_now
from atrium.settings import Settings

log = logging.getLogger("atrium.apikeys")

HEADER = "X-API-KEY"
KEY_PREFIX = "atr_"
REDIS_HASH = "sec_apikeys"
ADMIN = "admin"
SCOPES: tuple[str, ...] = (
    "templates:read",
    "templates:write",
    "hr:read",
    "hr:write",
    "market:read",
    ADMIN,
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SNAPSHOT_REFRESH_SECONDS = 5.0
UNKNOWN_KEY_RELOAD_SECONDS = 1.0


def generate_key() -> str:
    """A new random key (256 bits, URL-safe); the only moment it exists in clear."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What is stored and looked up: the SHA-256 hex digest of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def validate_scopes(scopes: Iterable[str], extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Normalise a scope list, refusing scopes nothing checks (a typo would grant nothing)."""
    allowed = set(SCOPES) | {s for s in extra if s}
    out: list[str] = []
    for scope in scopes:
        scope = scope.strip()
        if not scope:
            continue
        if scope not in allowed:
            raise ValueError(f"unknown scope {scope!r}; known: {', '.join(sorted(allowed))}")
        if scope not in out:
            out.append(scope)
    if not out:
        raise ValueError("at least one scope is needed")
    return tuple(out)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key's record (never the key itself)."""

    id: str
    owner: str
    scopes: tuple[str, ...]
    rate_limit: int | None = None
    created: str = ""
    revoked: str | None = None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return not self.revoked

    def principal(self) -> Principal:
        """Who a request carrying this key acts as."""
        return Principal(self.id, self.owner, frozenset(self.scopes), self.rate_limit)

    def to_json(self) -> bytes:
        """The Redis hash value."""
        return orjson.dumps(
            {
                "id": self.id,
                "owner": self.owner,
                "scopes": list(self.scopes),
                "rate_limit": self.rate_limit,
                "created": self.created,
                "revoked": self.revoked,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str, key_hash: str) -> ApiKey:
        """Parse a hash value leniently: older deployments wrote fewer fields."""
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            data = {"owner": text}
        scopes_raw = data.get("scopes") or []
        if isinstance(scopes_raw, str):
            scopes_raw = scopes_raw.replace(" ", ",").split(",")
        scopes = tuple(str(s).strip() for s in scopes_raw if str(s).strip())
        rate_limit: int | None = None
        try:
            if data.get("rate_limit") is not None and int(data["rate_limit"]) >= 1:
                rate_limit = int(data["rate_limit"])
        except (TypeError, ValueError):
            rate_limit = None
        revoked = data.get("revoked")
        return cls(
            id=str(data.get("id") or key_hash[:16]),
            owner=str(data.get("owner") or data.get("name") or ""),
            scopes=scopes,
            rate_limit=rate_limit,
            created=str(data.get("created") or ""),
            revoked=str(revoked) if revoked not in (None, False, "") else None,
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a key's owner and scopes, or anonymous with the anonymous scopes."""

    key_id: str | None
    owner: str | None
    scopes: frozenset[str] = field(default_factory=frozenset)
    rate_limit: int | None = None

    @property
    def anonymous(self) -> bool:
        """True when the request carried no key."""
        return self.key_id is None

    def allows(self, scope: str) -> bool:
        """``admin`` implies every scope."""
        return scope in self.scopes or ADMIN in self.scopes


def anonymous_principal(settings: Settings) -> Principal:
    """What a request without a key may do (``ATRIUM_ANONYMOUS_SCOPES``)."""
    return Principal(None, None, frozenset(settings.anonymous_scopes))


class ApiKeyRow(Base):
    """``api_keys``: the key store when no Redis is configured."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(LongText)
    scopes: Mapped[str] = mapped_column(LongText)
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_precise_now())
    revoked: Mapped[datetime | None] = mapped_column(UtcDateTime)

    def record(self) -> ApiKey:
        """As the storage-independent record."""
        return ApiKey(
            id=self.id,
            owner=self.owner,
            scopes=tuple(s for s in self.scopes.split(",") if s),
            rate_limit=self.rate_limit,
            created=_iso(self.created),
            revoked=_iso(self.revoked) if self.revoked is not None else None,
        )


_TABLE = cast(Table, ApiKeyRow.__table__)


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


KeyCheck = tuple[ApiKey | None, Decision | None]
KeyCheckRead = tuple[ApiKey | None, Decision | None, bytes | None]


async def _read_if_admitted(
    check: KeyCheck, cache: Cache, namespace: str, cache_key: str
) -> KeyCheckRead:
    record, decision = check
    if record is None or not record.active or (decision is not None and not decision.allowed):
        return record, decision, None
    try:
        _, value = await cache.backend.get_versioned(namespace, cache_key)
    except Exception:
        value = None  # the route will try again and degrade to the database
    return record, decision, value


class KeyStore(Protocol):
    """Where keys live; every implementation stores hashes only."""

    async def create(
        self,
        owner: str,
        scopes: Sequence[str],
        rate_limit: int | None = None,
        key: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Store a new key; returns the key (to show once) and its record."""

    async def list(self) -> list[ApiKey]:
        """Every record, oldest first."""

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Mark a key revoked; ``None`` when no key has that id."""

    async def lookup(self, key_hash: str) -> ApiKey | None:
        """The record of a key hash (no rate limiting)."""

    async def check(self, key_hash: str, limiter: Limiter, default_limit: int) -> KeyCheck:
        """The record and the rate-limit decision of one request with this key."""

    async def check_and_read(
        self,
        key_hash: str,
        limiter: Limiter,
        default_limit: int,
        cache: Cache,
        namespace: str,
        cache_key: str,
    ) -> KeyCheckRead:
        """:meth:`check`, plus the cache entry when admitted (one round trip with Redis)."""

    async def warm(self) -> None:
        """Load what the per-request checks use (at start-up; failures are not fatal)."""

    def reset(self) -> None:
        """Drop in-process state (tests)."""


def _new_record(owner: str, scopes: Sequence[str], rate_limit: int | None) -> ApiKey:
    return ApiKey(
        id=secrets.token_hex(8),
        owner=owner,
        scopes=tuple(scopes),
        rate_limit=rate_limit,
        created=_now_iso(),
    )


class SqlKeyStore:
    """Keys in the ``api_keys`` table, served from an in-process copy."""

    def __init__(self, engine: AsyncEngine, marker: Path | None = None) -> None:
        self.engine = engine
        self.marker = marker
        self._by_hash: dict[str, ApiKey] = {}
        self._loaded_at = -1e9
        self._marker_seen: int | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    def _marker_mtime(self) -> int | None:
        if self.marker is None:
            return None
        try:
            return os.stat(self.marker).st_mtime_ns
        except OSError:
            return None

    def _touch_marker(self) -> None:
        if self.marker is None:
            return
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(str(time.time_ns()))
        except OSError:
            log.warning("cannot write the api-key change marker", extra={"path": str(self.marker)})

    async def load(self) -> None:
        """Read the whole table (it is small: one row per key)."""
        async with self._lock:
            await self._load_locked()

    async def _load_locked(self) -> None:
        marker = self._marker_mtime()
        async with self.engine.connect() as connection:
            rows = (await connection.execute(select(_TABLE))).all()
        by_hash: dict[str, ApiKey] = {}
        for row in rows:
            item = ApiKeyRow(**row._mapping)
            by_hash[item.key_hash] = item.record()
        self._by_hash = by_hash
        self._loaded_at = time.monotonic()
        self._marker_seen = marker

    async def _refresh(self, *, unknown: bool = False) -> None:
        started = time.monotonic()
        async with self._lock:
            if unknown and self._loaded_at >= started - UNKNOWN_KEY_RELOAD_SECONDS:
                return  # somebody reloaded a moment ago; do not let unknown keys hammer the DB
            await self._load_locked()

    def _background_refresh(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(self._quiet_refresh())

    async def _quiet_refresh(self) -> None:
        try:
            await self._refresh()
        except Exception:
            log.warning("api-key reload failed", exc_info=True)

    async def lookup(self, key_hash: str) -> ApiKey | None:
        """From memory; reload first when another process changed the table."""
        if self._marker_mtime() != self._marker_seen:
            await self._refresh()
        elif time.monotonic() - self._loaded_at > SNAPSHOT_REFRESH_SECONDS:
            self._background_refresh()
        record = self._by_hash.get(key_hash)
        if record is None and time.monotonic() - self._loaded_at > UNKNOWN_KEY_RELOAD_SECONDS:
            await self._refresh(unknown=True)
            record = self._by_hash.get(key_hash)
        return record

    async def check(self, key_hash: str, limiter: Limiter, default_limit: int) -> KeyCheck:
        """Look up in memory, then count the request in the key's bucket."""
        record = await self.lookup(key_hash)
        if record is None or not record.active:
            return record, None
        decision = await limiter.hit("key:" + key_hash[:32], record.rate_limit or default_limit)
        return record, decision

    async def check_and_read(
        self,
        key_hash: str,
        limiter: Limiter,
        default_limit: int,
        cache: Cache,
        namespace: str,
        cache_key: str,
    ) -> KeyCheckRead:
        """:meth:`check`, then the (in-process) cache entry."""
        check = await self.check(key_hash, limiter, default_limit)
        return await _read_if_admitted(check, cache, namespace, cache_key)

    async def create(
        self,
        owner: str,
        scopes: Sequence[str],
        rate_limit: int | None = None,
        key: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Insert a row with the key's hash."""
        key = key or generate_key()
        record = _new_record(owner, scopes, rate_limit)
        async with self.engine.begin() as connection:
            await connection.execute(
                _TABLE.insert().values(
                    id=record.id,
                    key_hash=hash_key(key),
                    owner=owner,
                    scopes=",".join(record.scopes),
                    rate_limit=rate_limit,
                )
            )
        self._touch_marker()
        await self.load()
        return key, record

    async def list(self) -> list[ApiKey]:
        """Every row, oldest first."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(select(_TABLE).order_by(ApiKeyRow.created, ApiKeyRow.id))
            ).all()
        return [ApiKeyRow(**row._mapping).record() for row in rows]

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Set ``revoked``; effective for this process at once, for others per the above."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked.is_(None))
                .values(revoked=func.now())
            )
            row = (await connection.execute(select(_TABLE).where(ApiKeyRow.id == key_id))).first()
        self._touch_marker()
        await self.load()
        return ApiKeyRow(**row._mapping).record() if row is not None else None

    async def warm(self) -> None:
        """Load the table (at start-up)."""
        try:
            await self.load()
        except Exception:
            log.warning("could not load the api keys yet (not migrated?)", exc_info=True)

    def reset(self) -> None:
        """Forget the in-memory copy (the next lookup reloads)."""
        self._by_hash = {}
        self._loaded_at = -1e9
        self._marker_seen = None


# One round trip per request: the key's record and its rate-limit bucket together.
# KEYS[1] = the hash, KEYS[2] = the key's bucket; ARGV = field, default limit, period (µs).
# Returns {-1} (unknown), {-2, record} (revoked) or {allowed, remaining, retry_us, reset_us,
# limit, record[, cached entry]}.
_CHECK_KEY_LUA = (
    GCRA_LUA
    + """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return {-1} end
local limit = tonumber(ARGV[2])
local ok, data = pcall(cjson.decode, record)
if ok and type(data) == 'table' then
  local revoked = data['revoked']
  if revoked ~= nil and revoked ~= cjson.null and revoked ~= false and revoked ~= '' then
    return {-2, record}
  end
  local override = tonumber(data['rate_limit'])
  if override and override >= 1 then limit = math.floor(override) end
end
local r = gcra(KEYS[2], limit, tonumber(ARGV[3]))
if r[1] == 1 and #KEYS >= 3 then
  -- a cached read in the same round trip: KEYS[3] = the namespace's version key,
  -- ARGV[4] .. version .. ARGV[5] = the entry
  local version = redis.call('GET', KEYS[3]) or '0'
  return {r[1], r[2], r[3], r[4], limit, record, redis.call('GET', ARGV[4] .. version .. ARGV[5])}
end
return {r[1], r[2], r[3], r[4], limit, record}
"""
)


class RedisKeyStore:
    """Keys in the Redis hash ``sec_apikeys`` (field = sha256 of the key)."""

    def __init__(
        self, redis: Any, prefix: str, health: RedisHealth, fast: PipelinedScripts | None = None
    ) -> None:
        self.redis = redis
        self.hash = f"{prefix}{REDIS_HASH}"
        self.health = health
        self.fast = fast
        self._script = redis.register_script(_CHECK_KEY_LUA)
        self._fast_script = Script(_CHECK_KEY_LUA)
        self._snapshot: dict[str, ApiKey] = {}
        self._snapshot_at = -1e9
        self._background: asyncio.Task[None] | None = None
        self._parsed: dict[bytes, ApiKey] = {}

    def _parse(self, raw: bytes, key_hash: str) -> ApiKey:
        # Parsing the same few values on every request is waste; the dict stays tiny.
        record = self._parsed.get(raw)
        if record is None:
            if len(self._parsed) > 10_000:
                self._parsed.clear()
            record = self._parsed[raw] = ApiKey.from_json(raw, key_hash)
        return record

    async def refresh_snapshot(self) -> None:
        """Copy the whole hash (for use while Redis is unreachable)."""
        values = await self.redis.hgetall(self.hash)
        self._snapshot = {
            (k.decode() if isinstance(k, bytes) else k): ApiKey.from_json(v, str(k))
            for k, v in values.items()
        }
        self._snapshot_at = time.monotonic()

    def _maybe_refresh_snapshot(self) -> None:
        if time.monotonic() - self._snapshot_at < SNAPSHOT_REFRESH_SECONDS:
            return
        if self._background is None or self._background.done():
            self._snapshot_at = time.monotonic()  # one attempt per period, even if it fails
            self._background = asyncio.get_running_loop().create_task(self._quiet_refresh())

    async def _quiet_refresh(self) -> None:
        try:
            await self.refresh_snapshot()
        except Exception as exc:
            log.debug("api-key snapshot refresh failed: %s", type(exc).__name__)

    async def lookup(self, key_hash: str) -> ApiKey | None:
        """One HGET; the snapshot when Redis is unreachable."""
        if self.health.available:
            try:
                raw = await self.redis.hget(self.hash, key_hash)
            except Exception as exc:
                self.health.failed("api key lookup", exc)
            else:
                return None if raw is None else self._parse(raw, key_hash)
        return self._snapshot.get(key_hash)

    async def check(self, key_hash: str, limiter: Limiter, default_limit: int) -> KeyCheck:
        """The key's record and its bucket in one script call (one round trip)."""
        record, decision, _ = await self._check(key_hash, limiter, default_limit, None)
        return record, decision

    async def check_and_read(
        self,
        key_hash: str,
        limiter: Limiter,
        default_limit: int,
        cache: Cache,
        namespace: str,
        cache_key: str,
    ) -> KeyCheckRead:
        """Record, bucket and cache entry, still in one script call when the cache is Redis."""
        backend = cache.backend
        if not isinstance(backend, RedisBackend):
            check = await self.check(key_hash, limiter, default_limit)
            return await _read_if_admitted(check, cache, namespace, cache_key)
        read = (backend.version_key(namespace), backend.entry_prefix(namespace), f":{cache_key}")
        return await self._check(key_hash, limiter, default_limit, read)

    async def _check(
        self,
        key_hash: str,
        limiter: Limiter,
        default_limit: int,
        read: tuple[str, str, str] | None,
    ) -> KeyCheckRead:
        self._maybe_refresh_snapshot()
        if not isinstance(limiter, RedisLimiter):  # not how the app wires it, but be correct
            record = await self.lookup(key_hash)
            if record is None or not record.active:
                return record, None, None
            limit = record.rate_limit or default_limit
            return record, await limiter.hit("key:" + key_hash[:32], limit), None
        if self.health.available:
            keys = [self.hash, limiter.prefix + "key:" + key_hash[:32]]
            args: list[Any] = [key_hash, default_limit, PERIOD_SECONDS * 1_000_000]
            if read is not None:
                keys.append(read[0])
                args += read[1:]
            try:
                if self.fast is not None:
                    reply = await self.fast.run(self._fast_script, keys, args)
                else:
                    reply = await self._script(keys=keys, args=args)
            except Exception as exc:
                self.health.failed("api key check", exc)
            else:
                self.health.recovered()
                code = int(reply[0])
                if code == -1:
                    return None, None, None
                if code == -2:
                    return self._parse(reply[1], key_hash), None, None
                record = self._parse(reply[5], key_hash)
                decision = Decision.from_script(int(reply[4]), reply)
                return record, decision, reply[6] if len(reply) > 6 else None
        # Redis unreachable: known keys keep working (or 503 when failing closed).
        self.health.unavailable()
        return self._snapshot.get(key_hash), None, None

    async def create(
        self,
        owner: str,
        scopes: Sequence[str],
        rate_limit: int | None = None,
        key: str | None = None,
    ) -> tuple[str, ApiKey]:
        """HSET the record under the key's hash."""
        key = key or generate_key()
        record = _new_record(owner, scopes, rate_limit)
        await self.redis.hset(self.hash, hash_key(key), record.to_json())
        self._snapshot[hash_key(key)] = record
        return key, record

    async def _items(self) -> list[tuple[str, ApiKey]]:
        values = await self.redis.hgetall(self.hash)
        items = []
        for k, v in values.items():
            field_name = k.decode() if isinstance(k, bytes) else str(k)
            items.append((field_name, ApiKey.from_json(v, field_name)))
        return items

    async def list(self) -> list[ApiKey]:
        """Every record, oldest first."""
        return sorted((r for _, r in await self._items()), key=lambda r: (r.created, r.id))

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Rewrite the record with ``revoked`` set (the next request with it gets 401)."""
        for field_name, record in await self._items():
            if record.id == key_id:
                if record.active:
                    record = replace(record, revoked=_now_iso())
                    await self.redis.hset(self.hash, field_name, record.to_json())
                self._snapshot[field_name] = record
                return record
        return None

    async def warm(self) -> None:
        """Take the first snapshot (at start-up)."""
        self._snapshot_at = time.monotonic()
        await self._quiet_refresh()

    def reset(self) -> None:
        """Forget the snapshot."""
        self._snapshot = {}
        self._parsed = {}


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
