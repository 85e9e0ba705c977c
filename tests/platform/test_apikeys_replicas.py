"""A key created anywhere works at once on every replica, a revocation reaches them promptly,
and unknown keys cannot hammer the table (the SQL store: PostgreSQL or SQLite without Redis).

``here`` and ``there`` are two stores on the same database, as two replicas hold them; the
last tests start two real ``atrium serve`` processes sharing the session's database (and its
Redis in the PostgreSQL + Redis run, where a third variant runs them without Redis).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.apikeys import ApiKey, KeyStore, RedisKeyStore, SqlKeyStore, hash_key
from atrium.platform.apikeys.snapshot import MissResolver
from atrium.platform.apikeys.sql_store import CHANGE_CHECK_SECONDS
from atrium.platform.ratelimit import RedisHealth
from atrium.settings import Settings
from tests.support import run_server, secret, settings_env

# The promise the docs make: a revocation reaches every replica within about a second, two at
# most. Bounds below allow for a loaded 2-core machine on top of that.
REVOCATION_BOUND = 2 * CHANGE_CHECK_SECONDS + 2.0


@contextmanager
def _statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement sent on ``engine`` meanwhile, except the periodic change check."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "count(api_keys.revoked)" not in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _replicas(engine: AsyncEngine) -> tuple[SqlKeyStore, SqlKeyStore]:
    here, there = SqlKeyStore(engine), SqlKeyStore(engine)
    await here.warm()
    await there.warm()
    return here, there


async def _active(store: KeyStore, key_hash: str) -> bool:
    record = await store.lookup(key_hash)
    return record is not None and record.active


async def test_a_key_created_elsewhere_works_on_its_first_request(
    clean: FastAPI, engine: AsyncEngine
) -> None:
    here, there = await _replicas(engine)
    # here has just looked at the table (and just missed a key): no reload is due.
    assert await here.lookup(hash_key("atr_not_yet")) is None
    key, record = await there.create("elsewhere", ("templates:read",))
    found = await here.lookup(hash_key(key))
    assert found is not None
    assert (found.id, found.owner, found.active) == (record.id, "elsewhere", True)
    with _statements(engine) as statements:
        assert await here.lookup(hash_key(key)) == found
    assert statements == []  # from memory from now on


async def test_a_revocation_elsewhere_reaches_a_busy_replica_within_a_second_or_two(
    clean: FastAPI, engine: AsyncEngine
) -> None:
    here, there = await _replicas(engine)
    key, record = await there.create("busy", ("templates:read",))
    key_hash = hash_key(key)
    assert await _active(here, key_hash)
    await there.revoke(record.id)
    revoked_at = time.monotonic()
    while await _active(here, key_hash):  # a request every 20 ms
        assert time.monotonic() - revoked_at < REVOCATION_BOUND, "revocation never arrived"
        await asyncio.sleep(0.02)
    record_here = await here.lookup(key_hash)
    assert record_here is not None
    assert record_here.revoked


async def test_after_a_quiet_spell_the_first_request_sees_a_revocation(
    clean: FastAPI, engine: AsyncEngine
) -> None:
    here, there = await _replicas(engine)
    key, record = await there.create("quiet", ("templates:read",))
    assert await _active(here, hash_key(key))
    await there.revoke(record.id)
    await asyncio.sleep(2 * CHANGE_CHECK_SECONDS)  # nobody asks meanwhile
    assert not await _active(here, hash_key(key))


async def test_unknown_keys_cannot_hammer_the_table(clean: FastAPI, engine: AsyncEngine) -> None:
    store = SqlKeyStore(engine)
    await store.warm()
    bad = [hash_key(f"atr_bad_{n}") for n in range(2000)]
    with _statements(engine) as statements:
        assert await asyncio.gather(*(store.lookup(h) for h in bad)) == [None] * len(bad)
    # One query at a time, the misses that waited meanwhile together: 2000 keys, 4 queries.
    assert 1 <= len(statements) <= len(bad) // store.misses.batch + 1, len(statements)
    with _statements(engine) as statements:
        for _ in range(3):
            assert await asyncio.gather(*(store.lookup(h) for h in bad[:500])) == [None] * 500
    assert statements == []  # known to be absent: no query at all


async def test_a_chosen_key_tried_before_it_exists_works_soon_after(
    clean: FastAPI, engine: AsyncEngine
) -> None:
    here, there = await _replicas(engine)
    key = secret(f"atr_chosen_{secrets.token_hex(8)}")
    assert await here.lookup(hash_key(key)) is None  # now remembered as absent
    await there.create("chosen", ("templates:read",), key=key)
    created_at = time.monotonic()
    while not await _active(here, hash_key(key)):
        assert time.monotonic() - created_at < REVOCATION_BOUND
        await asyncio.sleep(0.02)


async def test_a_store_that_cannot_be_reached_refuses_unknown_keys_and_remembers_nothing() -> None:
    calls: list[list[str]] = []

    async def failing(hashes: list[str]) -> dict[str, ApiKey]:
        calls.append(hashes)
        raise ConnectionError("database down")

    misses = MissResolver(failing)
    assert await misses.resolve("ab" * 32) is None
    assert await misses.resolve("ab" * 32) is None
    assert calls == [["ab" * 32], ["ab" * 32]]  # asked again: a failure proves no absence


# --- two real server processes -----------------------------------------------------------------


def _cli_create(env: dict[str, str]) -> str:
    args = ["apikeys", "create", "--owner", "cli", "--scopes", "templates:read"]
    done = subprocess.run(
        [sys.executable, "-m", "atrium.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return secret(done.stdout.strip())


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant", ["as configured", pytest.param("sql store", marks=pytest.mark.postgres)]
)
async def test_keys_across_two_server_processes(
    variant: str, clean: FastAPI, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Created (in-process or by the CLI): 200 at once on both; revoked: 401 on both, promptly.

    "as configured": the session's storage (SQLite; PostgreSQL + Redis). "sql store": the same
    PostgreSQL without Redis, the ``api_keys`` table behind both servers.
    """
    env = settings_env(settings, ATRIUM_RATE_LIMIT="100000")
    redis = clean.state.redis if variant == "as configured" else None
    if redis is None:
        env.pop("ATRIUM_REDIS_URL", None)
    # What creates and revokes here stands for another machine: it does not touch the embedded
    # change marker, so only the table (or Redis) can tell the servers.
    writer: KeyStore = (
        SqlKeyStore(engine)
        if redis is None
        else RedisKeyStore(redis, settings.redis_prefix, RedisHealth(fail_open=True))
    )
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        # Both servers start at once (each waits for its /livez): half the waiting.
        starting = [pool.submit(stack.enter_context, run_server(env, tmp_path / n)) for n in "ab"]
        a, b = (future.result() for future in starting)
        async with httpx.AsyncClient(timeout=10) as http:

            async def statuses(key: str) -> list[int]:
                headers = {"X-API-KEY": key}
                replies = [await http.get(f"{s.url}/templates", headers=headers) for s in (a, b)]
                return [r.status_code for r in replies]

            # Both servers have just been asked about an unknown key (a reload, were one due).
            assert await statuses("atr_unknown_key") == [401, 401]
            key, record = await writer.create("replicas", ("templates:read",))
            assert await statuses(secret(key)) == [200, 200]
            assert await statuses(_cli_create(env)) == [200, 200]

            await writer.revoke(record.id)
            if redis is not None:
                # With Redis every request reads the record: refused from the very next one.
                assert await statuses(key) == [401, 401]
                return
            revoked_at = time.monotonic()
            while (current := await statuses(key)) != [401, 401]:
                assert set(current) <= {200, 401}, current
                waited = time.monotonic() - revoked_at
                assert waited < REVOCATION_BOUND, f"still {current} after {waited:.1f}s"
                await asyncio.sleep(0.05)
