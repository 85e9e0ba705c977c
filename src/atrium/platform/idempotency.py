"""``Idempotency-Key`` for the POSTs that create something (IETF draft, as Stripe does it).

A client that sends ``Idempotency-Key: <unique value>`` may retry the request safely:

* same key, same request → the first response is replayed (status, body, headers, plus
  ``Idempotent-Replayed: true``) and nothing is created again;
* same key, different request → 422 problem;
* same key while the first request is still running → 409 problem (retry later);
* keys are remembered for ``ATRIUM_IDEMPOTENCY_TTL_SECONDS`` (24 h) and are scoped per caller
  (API key id, else bearer token, else client address), so two callers never collide.

It is a pure ASGI middleware applied by path, so every domain gets it without code of its own.
The first request *claims* the key (atomically, in Redis or with the table's primary key), runs,
and the response is stored before it is sent, so a retry arriving right after the response can
only ever see the stored result. A 5xx or a crash releases the claim (the retry runs again);
a claim whose process died is taken over after a short lease. The store is Redis when
configured, else the ``idempotency_keys`` table: shared by every replica either way.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import orjson
from sqlalchemy import BigInteger, Integer, String, Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.platform.clientip import ClientIpResolver
from atrium.platform.db import Base
from atrium.platform.errors import send_problem, send_unavailable
from atrium.platform.headers import header
from atrium.platform.metrics import IDEMPOTENT_REPLAYS
from atrium.platform.sql import insert_ignore
from atrium.platform.sqltypes import LongBinary, LongText
from atrium.settings import Settings

log = logging.getLogger("atrium.idempotency")

HEADER = "Idempotency-Key"
LEASE_SECONDS = 60  # how long a claim of a crashed process blocks retries
MAX_STORED_BODY = 8 * 1024 * 1024
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Never replayed: recomputed, per-request, or secrets.
_UNSTORED_HEADERS = frozenset(
    {b"content-length", b"set-cookie", b"date", b"server", b"x-request-id", b"x-atrium-replica"}
)
DOC = (
    "Send an `Idempotency-Key` header (1 to 255 visible ASCII characters, unique per attempt) to "
    "retry safely: the same key with the same body replays the first response, with another "
    "body it is a 422, while the first is still running a 409. Keys are kept 24 h."
)


@dataclass(frozen=True, slots=True)
class Stored:
    """What a key holds: its request's fingerprint and, once finished, the response."""

    fingerprint: str
    token: str
    status: int | None = None  # None while the first request runs
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def to_json(self) -> bytes:
        """Serialised for Redis."""
        return orjson.dumps(
            {
                "fp": self.fingerprint,
                "token": self.token,
                "status": self.status,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
                "body": base64.b64encode(self.body).decode(),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Stored:
        """Parse a Redis value."""
        data = orjson.loads(raw)
        return cls(
            fingerprint=data["fp"],
            token=data["token"],
            status=data.get("status"),
            headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in data["headers"]),
            body=base64.b64decode(data.get("body") or ""),
        )


class IdempotencyStore(Protocol):
    """Claims and results, shared by every replica."""

    async def claim(self, scope: str, key: str, stored: Stored) -> Stored | None:
        """Claim ``key`` for a new request; ``None`` when claimed, else what the key holds."""

    async def complete(self, scope: str, key: str, stored: Stored, ttl: int) -> None:
        """Store the finished response (only while our claim holds)."""

    async def release(self, scope: str, key: str, token: str) -> None:
        """Drop our claim so that a retry runs again."""


_CLAIM_LUA = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

_COMPLETE_LUA = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['token'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_RELEASE_LUA = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['token'] == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisIdempotencyStore:
    """Keys ``{prefix}idem:{scope}:{key}``, expiring by themselves."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.prefix = f"{prefix}idem:"
        self._claim = redis.register_script(_CLAIM_LUA)
        self._complete = redis.register_script(_COMPLETE_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    def _name(self, scope: str, key: str) -> str:
        return f"{self.prefix}{scope}:{key}"

    async def claim(self, scope: str, key: str, stored: Stored) -> Stored | None:
        """Atomic get-or-set with the lease as expiry."""
        current = await self._claim(
            keys=[self._name(scope, key)], args=[stored.to_json(), LEASE_SECONDS * 1000]
        )
        return Stored.from_json(current) if current else None

    async def complete(self, scope: str, key: str, stored: Stored, ttl: int) -> None:
        """Replace the claim by the result, kept ``ttl`` seconds."""
        await self._complete(
            keys=[self._name(scope, key)], args=[stored.token, stored.to_json(), ttl * 1000]
        )

    async def release(self, scope: str, key: str, token: str) -> None:
        """Delete the claim if it is still ours."""
        await self._release(keys=[self._name(scope, key)], args=[token])


class IdempotencyRow(Base):
    """``idempotency_keys``: the store when no Redis is configured."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(String(32))
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[str | None] = mapped_column(LongText)
    body: Mapped[bytes | None] = mapped_column(LongBinary)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)


_TABLE = cast(Table, IdempotencyRow.__table__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class SqlIdempotencyStore:
    """Rows keyed by (scope, key); expiry is a column, purged now and then."""

    PURGE_EVERY_SECONDS = 600

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._next_purge = 0.0

    @staticmethod
    def _from_row(row: Any) -> Stored:
        headers = orjson.loads(row.headers) if row.headers else []
        return Stored(
            fingerprint=row.fingerprint,
            token=row.token,
            status=row.status,
            headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
            body=row.body or b"",
        )

    async def claim(self, scope: str, key: str, stored: Stored) -> Stored | None:
        """Insert-or-ignore the claim; on conflict read it, taking over an expired one."""
        await self._maybe_purge()
        table = _TABLE
        expires = _now_ms() + LEASE_SECONDS * 1000
        values = {
            "scope": scope,
            "key": key,
            "fingerprint": stored.fingerprint,
            "token": stored.token,
            "status": None,
            "headers": None,
            "body": None,
            "expires_ms": expires,
        }
        async with self.engine.begin() as connection:
            inserted = await connection.execute(
                insert_ignore(table, keys=("scope", "key")).values(**values)
            )
            if inserted.rowcount == 1:
                return None
            row = (
                await connection.execute(
                    select(table).where(table.c.scope == scope, table.c.key == key)
                )
            ).first()
            if row is None:  # purged in between: try once more
                await connection.execute(table.insert().values(**values))
                return None
            if row.expires_ms > _now_ms():
                return self._from_row(row)
            taken = await connection.execute(
                update(table)
                .where(table.c.scope == scope, table.c.key == key, table.c.token == row.token)
                .values(**{k: v for k, v in values.items() if k not in ("scope", "key")})
            )
            return None if taken.rowcount == 1 else self._from_row(row)

    async def complete(self, scope: str, key: str, stored: Stored, ttl: int) -> None:
        """UPDATE our claim with the response."""
        table = _TABLE
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.scope == scope, table.c.key == key, table.c.token == stored.token)
                .values(
                    status=stored.status,
                    headers=orjson.dumps(
                        [[k.decode("latin-1"), v.decode("latin-1")] for k, v in stored.headers]
                    ).decode(),
                    body=stored.body,
                    expires_ms=_now_ms() + ttl * 1000,
                )
            )

    async def release(self, scope: str, key: str, token: str) -> None:
        """DELETE our claim."""
        table = _TABLE
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(table).where(
                    table.c.scope == scope, table.c.key == key, table.c.token == token
                )
            )

    async def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + self.PURGE_EVERY_SECONDS
        table = _TABLE
        try:
            async with self.engine.begin() as connection:
                await connection.execute(delete(table).where(table.c.expires_ms < _now_ms()))
        except Exception:
            log.warning("purging expired idempotency keys failed", exc_info=True)


def build_idempotency_store(
    settings: Settings, engine: AsyncEngine, redis: Any
) -> IdempotencyStore:
    """Redis when configured, else the SQL table."""
    if redis is not None:
        return RedisIdempotencyStore(redis, settings.redis_prefix)
    return SqlIdempotencyStore(engine)


def fingerprint(scope: Scope, body: bytes) -> str:
    """SHA-256 of method, path, query and body (JSON canonicalised: key order is not a change)."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = body
    digest = hashlib.sha256()
    digest.update(f"{scope['method']} {scope['path']}?".encode())
    digest.update(scope.get("query_string", b""))
    digest.update(b"\n")
    digest.update(canonical)
    return digest.hexdigest()


class IdempotencyMiddleware:
    """Applies the protocol above to POSTs whose path fully matches one of ``paths``."""

    def __init__(
        self, app: ASGIApp, state: State, settings: Settings, paths: Sequence[str]
    ) -> None:
        self.app = app
        self.state = state
        self.ttl = settings.idempotency_ttl_seconds
        self.patterns = [re.compile(p) for p in paths]
        self.client_ip = ClientIpResolver(settings.trusted_proxies)
        self._last_warning = 0.0

    def applies(self, scope: Scope) -> bool:
        """POST to a creating endpoint."""
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and any(p.fullmatch(scope["path"]) for p in self.patterns)
        )

    def caller(self, scope: Scope) -> str:
        """The key's id, else a hash of the bearer token, else the client address."""
        principal = scope.get("state", {}).get("principal")
        if principal is not None and principal.key_id is not None:
            return f"key:{principal.key_id}"
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return "bearer:" + hashlib.sha256(value[7:].strip()).hexdigest()[:32]
        ip = scope.get("state", {}).get("client_ip") or self.client_ip(scope)
        return f"ip:{ip}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.applies(scope):
            await self.app(scope, receive, send)
            return
        raw_key = header(scope, b"idempotency-key")
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        raw_key = raw_key.strip()
        key = raw_key[1:-1] if len(raw_key) >= 2 and raw_key[0] == raw_key[-1] == '"' else raw_key
        if not _VALID_KEY.match(key):
            await send_problem(
                scope,
                send,
                422,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
            return
        body, more_messages = await _read_body(receive)
        caller = self.caller(scope)
        claim = Stored(fingerprint(scope, body), secrets.token_hex(8))
        store: IdempotencyStore = self.state.idempotency
        try:
            existing = await store.claim(caller, key, claim)
        except Exception as exc:
            self._warn("claim", exc)
            await send_unavailable(scope, send, "the idempotency store")
            return
        if existing is not None:
            await self._answer_existing(scope, send, claim, existing)
            return
        await self._run(
            scope, _replay_receive(body, more_messages, receive), send, caller, key, claim
        )

    async def _answer_existing(
        self, scope: Scope, send: Send, claim: Stored, existing: Stored
    ) -> None:
        if existing.fingerprint != claim.fingerprint:
            await send_problem(
                scope,
                send,
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was already used with a different request",
            )
        elif existing.status is None:
            await send_problem(
                scope,
                send,
                409,
                "idempotency-key-in-flight",
                "Request in progress",
                "a request with this Idempotency-Key is still being processed; retry later",
                {"Retry-After": "1"},
            )
        else:
            IDEMPOTENT_REPLAYS.inc()
            headers = [*existing.headers, (b"content-length", str(len(existing.body)).encode())]
            headers.append((b"idempotent-replayed", b"true"))
            await send(
                {"type": "http.response.start", "status": existing.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": existing.body})

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, caller: str, key: str, claim: Stored
    ) -> None:
        store: IdempotencyStore = self.state.idempotency
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        flushed = False  # too large to keep: streamed through, claim released
        finished = False

        async def capture(message: Message) -> None:
            nonlocal start, size, flushed, finished
            if flushed:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_STORED_BODY:
                flushed = True
                assert start is not None
                await send(start)
                await send(
                    {"type": "http.response.body", "body": b"".join(chunks), "more_body": True}
                )
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            if message.get("more_body", False):
                return
            finished = True
            assert start is not None
            status: int = start["status"]
            # Store before sending: a retry racing the response then finds the result.
            if status < 500:
                headers = tuple(
                    (bytes(k).lower(), bytes(v))
                    for k, v in start.get("headers", ())
                    if bytes(k).lower() not in _UNSTORED_HEADERS
                )
                result = Stored(claim.fingerprint, claim.token, status, headers, b"".join(chunks))
                try:
                    await store.complete(caller, key, result, self.ttl)
                except Exception as exc:
                    self._warn("complete", exc)
            else:
                await self._release(store, caller, key, claim.token)
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(chunks)})

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            if not finished:
                await self._release(store, caller, key, claim.token)
            raise
        if flushed or not finished:
            await self._release(store, caller, key, claim.token)

    async def _release(self, store: IdempotencyStore, caller: str, key: str, token: str) -> None:
        try:
            await store.release(caller, key, token)
        except Exception as exc:
            self._warn("release", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10:
            self._last_warning = now
            log.warning(
                "idempotency store failed", extra={"during": what, "error": type(exc).__name__}
            )


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole request body (the body-limit middleware outside bounds it)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), [message]
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), []


def _replay_receive(body: bytes, pending: list[Message], receive: Receive) -> Receive:
    """Hand the already-read body to the application once, then defer to the real channel."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
