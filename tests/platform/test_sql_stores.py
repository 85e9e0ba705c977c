"""The SQL-backed stores on this run's engine (SQLite, PostgreSQL or MariaDB).

With Redis configured the application keeps API keys in Redis, so the HTTP tests of a server
run never reach the SQL key store; here it runs directly against the run's database, Redis or
not. Idempotency keys always live in the database (their answers commit with the work).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.apikeys import ApiKeyRow, SqlKeyStore, hash_key
from atrium.platform.idempotency import IdempotencyRow, IdempotencyStore, Stored


def _stored(status: int = 201, body: bytes = b"") -> Stored:
    return Stored(fingerprint="f" * 64, status=status, body=body)


async def _save(store: IdempotencyStore, key: str, stored: Stored) -> bool:
    async with store.sessionmaker() as session:
        saved = await store.save(session, "scope", key, stored, ttl=60)
        await session.commit()
        return saved


async def test_idempotency_save_and_replay(clean: FastAPI, engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    # A response bigger than MySQL's BLOB (64 KiB) and with every byte value is kept whole.
    body = bytes(range(256)) * 1024
    assert await _save(store, "retry-1", _stored(201, body))
    assert not await _save(store, "retry-1", _stored(409))  # the first answer stays
    async with store.sessionmaker() as session:
        replay = await store.lookup(session, "scope", "retry-1")
        missing = await store.lookup(session, "scope", "retry-2")
    assert replay is not None
    assert (replay.status, replay.body) == (201, body)
    assert missing is None


async def test_idempotency_keys_are_exact(clean: FastAPI, engine: AsyncEngine) -> None:
    """Case and trailing spaces tell keys apart (a NO PAD, binary comparison everywhere)."""
    store = IdempotencyStore(engine)
    for key in ("Key", "key", "key "):
        assert await _save(store, key, _stored())
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(IdempotencyRow))
    assert count == 3


async def test_idempotency_concurrent_answers_have_one_winner(
    clean: FastAPI, engine: AsyncEngine
) -> None:
    store = IdempotencyStore(engine)
    results = await asyncio.gather(*(_save(store, "race", _stored(200 + i)) for i in range(8)))
    assert sum(results) == 1


async def test_idempotency_an_expired_answer_gives_way(clean: FastAPI, engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    assert await _save(store, "k", _stored(201))
    async with engine.begin() as connection:
        await connection.execute(IdempotencyRow.__table__.update().values(expires_ms=0))
    async with store.sessionmaker() as session:
        assert await store.lookup(session, "scope", "k") is None
    assert await _save(store, "k", _stored(202))
    async with store.sessionmaker() as session:
        again = await store.lookup(session, "scope", "k")
    assert again is not None
    assert again.status == 202


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
