"""``Idempotency-Key`` for the POSTs that create something (IETF draft, as Stripe does it).

A client that sends ``Idempotency-Key: <unique value>`` may retry the request safely:

* same key, same request → the first response is replayed (status, body, headers, plus
  ``Idempotent-Replayed: true``) and nothing is created again;
* same key, different request → 422 problem;
* same key while the first request is still running → 409 problem (retry later);
* keys are remembered for ``ATRIUM_IDEMPOTENCY_TTL_SECONDS`` (24 h) and are scoped per caller
  (API key id, else bearer token, else client address), so two callers never collide.

It is a pure ASGI middleware applied by path, so every domain gets it without code of its own.
What makes it hold through crashes and broken connections:

* **The answer is stored with the work, in one transaction.** The middleware opens the
  request's database session and the route works in it (:func:`atrium.platform.db.get_session`
  hands it over without committing); once the response is complete, the key's row (status,
  headers, body) joins the same transaction and both commit at once, before a byte is sent.
  Whenever a process dies, a key has its work and its answer, or neither: a retry replays the
  first or simply runs. A 5xx or an exception rolls the work back and stores nothing.
* **The key is locked by the transaction itself.** On PostgreSQL a transaction-level advisory
  lock, which the database drops with the transaction — also the moment the owner's connection
  breaks (``client_connection_check_interval`` makes it notice while a statement runs) — so
  the key of a dead process can be retried within seconds, never after a lease. Within one
  process a set of running keys answers the 409 without a query.
* **The primary key is the judge.** Should two requests with one key still run at once (two
  processes on SQLite, which has no such lock), the second cannot store its answer: its work is
  rolled back and it replays the first's.
* **A body that never arrived whole neither runs nor claims its key**: a client that
  disconnected before sending all of it is gone, and its retry starts afresh.

Redis is deliberately not a store here: no Redis write can join the database's transaction.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

import orjson
from sqlalchemy import BigInteger, Integer, String, Table, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.platform.clientip import ClientIpResolver
from atrium.platform.db import (
    OWNED_SESSION,
    Base,
    create_sessionmaker,
    rollback,
    run_after_commit,
)
from atrium.platform.errors import AtriumError, send_problem, send_unavailable
from atrium.platform.headers import header
from atrium.platform.metrics import IDEMPOTENT_REPLAYS
from atrium.platform.sql import insert_ignore
from atrium.platform.sqltypes import LongBinary, LongText
from atrium.settings import Settings

log = logging.getLogger("atrium.idempotency")

HEADER = "Idempotency-Key"
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
    """A finished request under a key: its fingerprint and its response."""

    fingerprint: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


class IdempotencyRow(Base):
    """``idempotency_keys``: one row per finished keyed request, until it expires."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(String(32))  # unused since answers commit with the work
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[str | None] = mapped_column(LongText)
    body: Mapped[bytes | None] = mapped_column(LongBinary)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)


_TABLE = cast(Table, IdempotencyRow.__table__)
_PRIMARY_KEY = ("scope", "key")


def _now_ms() -> int:
    return int(time.time() * 1000)


KeyLock = Callable[[AsyncSession, str, str], Awaitable[bool]]


async def _advisory_lock(session: AsyncSession, scope: str, key: str) -> bool:
    # 64 bits of the key's hash; a collision only costs a spurious 409.
    digest = hashlib.sha256(f"{scope}\x00{key}".encode()).digest()
    number = int.from_bytes(digest[:8], "big", signed=True)
    locked = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:n)"), {"n": number})
    return bool(locked)


async def _no_lock(session: AsyncSession, scope: str, key: str) -> bool:
    # No lock that dies with the transaction (SQLite): the primary key decides (see above).
    return True


class IdempotencyStore:
    """The ``idempotency_keys`` table, written in the request's own transaction."""

    PURGE_EVERY_SECONDS = 600

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # The requests' sessions (the application's engine: the work shares the transaction).
        self.sessionmaker = create_sessionmaker(engine)
        self._next_purge = 0.0
        # The one engine difference here: which key lock dies with its transaction.
        postgres = engine.dialect.name == "postgresql"
        self.lock: KeyLock = _advisory_lock if postgres else _no_lock

    async def lookup(self, session: AsyncSession, scope: str, key: str) -> Stored | None:
        """The finished, unexpired request stored under ``key``."""
        await self._maybe_purge()
        table = _TABLE
        row = (
            await session.execute(
                select(table.c.fingerprint, table.c.status, table.c.headers, table.c.body).where(
                    table.c.scope == scope, table.c.key == key, table.c.expires_ms > _now_ms()
                )
            )
        ).first()
        if row is None or row.status is None:
            return None
        headers = orjson.loads(row.headers) if row.headers else []
        return Stored(
            fingerprint=row.fingerprint,
            status=row.status,
            headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
            body=row.body or b"",
        )

    async def save(
        self, session: AsyncSession, scope: str, key: str, stored: Stored, ttl: int
    ) -> bool:
        """Add the answer to the session's transaction; ``False`` when the key already holds
        an unexpired answer (an expired one is replaced)."""
        now = _now_ms()
        table = _TABLE
        # An expired answer (not purged yet) gives way; a live one stays and wins.
        await session.execute(
            delete(table).where(
                table.c.scope == scope, table.c.key == key, table.c.expires_ms <= now
            )
        )
        statement = insert_ignore(table, keys=_PRIMARY_KEY).values(
            scope=scope,
            key=key,
            fingerprint=stored.fingerprint,
            token="",
            status=stored.status,
            headers=orjson.dumps(
                [[k.decode("latin-1"), v.decode("latin-1")] for k, v in stored.headers]
            ).decode(),
            body=stored.body,
            expires_ms=now + ttl * 1000,
        )
        result = await session.execute(statement)
        return bool(getattr(result, "rowcount", 0) == 1)

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


def build_idempotency_store(engine: AsyncEngine) -> IdempotencyStore:
    """The store: the application's database, whatever the engine."""
    return IdempotencyStore(engine)


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
        self._running: set[tuple[str, str]] = set()
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
        body = await _read_body(receive)
        if body is None:
            # The client left before its body was whole: nobody to answer, nothing to run.
            log.info("request body incomplete: not run", extra={"path": scope["path"]})
            return
        caller = self.caller(scope)
        running = (caller, key)
        if running in self._running:
            await _in_flight(scope, send)
            return
        self._running.add(running)
        try:
            await self._handle(scope, receive, send, caller, key, body)
        finally:
            self._running.discard(running)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, caller: str, key: str, body: bytes
    ) -> None:
        store: IdempotencyStore = self.state.idempotency
        request_fingerprint = fingerprint(scope, body)
        async with store.sessionmaker() as session:
            try:
                existing = await store.lookup(session, caller, key)
                locked = existing is None and await store.lock(session, caller, key)
            except Exception as exc:
                self._warn("lookup", exc)
                await send_unavailable(scope, send, "the idempotency store")
                return
            if existing is not None:
                await _answer_existing(scope, send, request_fingerprint, existing)
                return
            if not locked:
                await _in_flight(scope, send)
                return
            await self._run(scope, receive, send, session, caller, key, request_fingerprint, body)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        session: AsyncSession,
        caller: str,
        key: str,
        request_fingerprint: str,
        body: bytes,
    ) -> None:
        store: IdempotencyStore = self.state.idempotency
        response = _Captured()
        scope[OWNED_SESSION] = session
        try:
            await self.app(scope, _once(body, receive), response.capture)
        except BaseException:
            await rollback(session)
            raise
        finally:
            del scope[OWNED_SESSION]
        if response.start is None or not response.complete:
            await rollback(session)
            await response.replay(send)  # whatever was produced (an aborted stream)
            return
        status: int = response.start["status"]
        if status >= 500:
            await rollback(session)  # nothing of a failed request is kept: a retry runs again
            await response.replay(send)
            return
        headers = tuple(
            (bytes(k).lower(), bytes(v))
            for k, v in response.start.get("headers", ())
            if bytes(k).lower() not in _UNSTORED_HEADERS
        )
        stored = Stored(request_fingerprint, status, headers, response.body)
        try:
            saved = await store.save(session, caller, key, stored, self.ttl)
            if saved:
                await session.commit()  # the work and its answer, at once
        except Exception as exc:
            await rollback(session)
            self._warn("commit", exc)
            await send_problem(
                scope,
                send,
                503,
                "unavailable",
                "Service Unavailable",
                "the request could not be committed, so nothing was stored; retry it",
                {"Retry-After": "1"},
            )
            return
        if not saved:
            # Another request with this key finished first: ours is undone, theirs stands.
            await rollback(session)
            first = await store.lookup(session, caller, key)
            if first is not None:
                await _answer_existing(scope, send, request_fingerprint, first)
            else:
                await _in_flight(scope, send)
            return
        try:
            await run_after_commit(session)
        except AtriumError as exc:
            # Committed, but a follow-up (a cache bump) failed: say so; a retry with this key
            # replays the stored answer.
            await send_problem(
                scope, send, exc.status, exc.slug, exc.default_title(), exc.detail or "", []
            )
            return
        await response.replay(send)

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10:
            self._last_warning = now
            log.warning(
                "idempotency store failed", extra={"during": what, "error": type(exc).__name__}
            )


class _Captured:
    """The response an application sends, held back until its answer is stored."""

    def __init__(self) -> None:
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.complete = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def capture(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))
            self.complete = not message.get("more_body", False)

    async def replay(self, send: Send) -> None:
        if self.start is None:
            return
        await send(self.start)
        await send({"type": "http.response.body", "body": self.body})


async def _in_flight(scope: Scope, send: Send) -> None:
    await send_problem(
        scope,
        send,
        409,
        "idempotency-key-in-flight",
        "Request in progress",
        "a request with this Idempotency-Key is still being processed; retry later",
        {"Retry-After": "1"},
    )


async def _answer_existing(
    scope: Scope, send: Send, request_fingerprint: str, existing: Stored
) -> None:
    if existing.fingerprint != request_fingerprint:
        await send_problem(
            scope,
            send,
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "this Idempotency-Key was already used with a different request",
        )
        return
    IDEMPOTENT_REPLAYS.inc()
    headers = [*existing.headers, (b"content-length", str(len(existing.body)).encode())]
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": existing.status, "headers": headers})
    await send({"type": "http.response.body", "body": existing.body})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` when the client disconnected before its end (the
    body-limit middleware outside bounds its size)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect: the declared length or final chunk never came
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _once(body: bytes, receive: Receive) -> Receive:
    """Hand the already-read body to the application once, then defer to the real channel
    (which reports the client's disconnect)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
