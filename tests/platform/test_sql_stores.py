"""The SQL-backed API-key and idempotency stores on this run's engine.

With Redis configured the application keeps keys and idempotency records in Redis, so the
HTTP tests of a server run never reach these stores; here they run directly against the
run's database (SQLite, PostgreSQL or MariaDB), Redis or not.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.apikeys import ApiKeyRow, SqlKeyStore, hash_key
from atrium.platform.idempotency import IdempotencyRow, SqlIdempotencyStore, Stored


def _stored(token: str, status: int | None = None, body: bytes = b"") -> Stored:
    return Stored(fingerprint="f" * 64, token=token, status=status, body=body)


async def test_idempotency_claim_complete_replay(clean: FastAPI, engine: AsyncEngine) -> None:
    store = SqlIdempotencyStore(engine)
    key = "retry-1"
    assert await store.claim("scope", key, _stored("t1")) is None
    held = await store.claim("scope", key, _stored("t2"))
    assert held is not None
    assert held.token == "t1"
    assert held.status is None
    # A response bigger than MySQL's BLOB (64 KiB) and with every byte value is kept whole.
    body = bytes(range(256)) * 1024
    await store.complete("scope", key, _stored("t1", 201, body), ttl=60)
    replay = await store.claim("scope", key, _stored("t3"))
    assert replay is not None
    assert (replay.status, replay.body, replay.token) == (201, body, "t1")


async def test_idempotency_keys_are_exact(clean: FastAPI, engine: AsyncEngine) -> None:
    """Case and trailing spaces tell keys apart (a NO PAD, binary comparison everywhere)."""
    store = SqlIdempotencyStore(engine)
    for key in ("Key", "key", "key "):
        assert await store.claim("scope", key, _stored(key)) is None
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(IdempotencyRow))
    assert count == 3


async def test_idempotency_concurrent_claims_have_one_winner(
    clean: FastAPI, engine: AsyncEngine
) -> None:
    store = SqlIdempotencyStore(engine)
    results = await asyncio.gather(
        *(store.claim("scope", "race", _stored(f"t{i}")) for i in range(8))
    )
    assert sum(result is None for result in results) == 1


async def test_idempotency_release_and_expired_takeover(
    clean: FastAPI, engine: AsyncEngine
) -> None:
    store = SqlIdempotencyStore(engine)
    assert await store.claim("scope", "k", _stored("t1")) is None
    await store.release("scope", "k", "t1")
    assert await store.claim("scope", "k", _stored("t2")) is None
    async with engine.begin() as connection:
        await connection.execute(IdempotencyRow.__table__.update().values(expires_ms=0))
    assert await store.claim("scope", "k", _stored("t3")) is None  # the expired one is taken


async def test_api_key_store_round_trip(clean: FastAPI, engine: AsyncEngine) -> None:
    store = SqlKeyStore(engine)
    key, record = await store.create("owner 🙂", ("templates:read",), rate_limit=5)
    found = await store.lookup(hash_key(key))
    assert found is not None
    assert (found.id, found.owner, found.scopes) == (record.id, "owner 🙂", ("templates:read",))
    revoked = await store.revoke(record.id)
    assert revoked is not None
    assert not revoked.active
    async with engine.connect() as connection:
        stored = (
            await connection.execute(select(ApiKeyRow.revoked).where(ApiKeyRow.id == record.id))
        ).scalar_one()
    assert stored is not None
    assert stored.tzinfo is not None
    assert [k.id for k in await store.list() if k.id == record.id] == [record.id]
