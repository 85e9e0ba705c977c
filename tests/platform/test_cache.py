"""The versioned cache: hits, misses, invalidation, and the race that must not go stale."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI

from atrium.platform.cache import Cache, CacheBackend, MemoryBackend, RedisBackend


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, clean: FastAPI) -> CacheBackend:
    if request.param == "memory":
        return MemoryBackend()
    assert clean.state.redis is not None, "the real-server run needs ATRIUM_TEST_REDIS_URL"
    return RedisBackend(clean.state.redis, clean.state.settings.redis_prefix)


async def test_read_through_and_invalidate(backend: CacheBackend) -> None:
    cache = Cache(backend, ttl=60)
    store = {"value": b"one"}
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        return store["value"]

    assert await cache.get_or_load("ns", "k", load, bytes, bytes) == b"one"
    assert await cache.get_or_load("ns", "k", load, bytes, bytes) == b"one"
    assert loads == 1
    store["value"] = b"two"
    await cache.invalidate("ns")
    assert await cache.get_or_load("ns", "k", load, bytes, bytes) == b"two"
    assert loads == 2


async def test_reader_racing_a_writer_never_leaves_stale_value(backend: CacheBackend) -> None:
    """A reader that loaded the old row before the commit stores it under the old version."""
    cache = Cache(backend, ttl=60)
    row = {"value": b"old"}
    loaded_old = asyncio.Event()
    write_done = asyncio.Event()

    async def slow_load() -> bytes:
        value = row["value"]
        loaded_old.set()
        await write_done.wait()  # the write commits and invalidates meanwhile
        return value

    reader = asyncio.create_task(cache.get_or_load("ns", "k", slow_load, bytes, bytes))
    await loaded_old.wait()
    row["value"] = b"new"
    await cache.invalidate("ns")
    write_done.set()
    assert await reader == b"old"  # that request started before the write: fine

    async def load() -> bytes:
        return row["value"]

    assert await cache.get_or_load("ns", "k", load, bytes, bytes) == b"new"
