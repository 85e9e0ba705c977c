"""The cache never serves stale data: randomized concurrent writers and readers.

Each user has one writer doing random changes (toggle, create, delete certificates, rename)
one after another, so the state after its i-th write, S_i, is known. Readers read at random
meanwhile. A read that started after write n returned and ended before write m+1 started must
observe one of S_n … S_m; anything older is a stale read. Through the real cache (Redis in the
PostgreSQL run), in-process and across two server processes sharing one Redis.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from atrium.platform.cache import Cache, MemoryBackend
from atrium.settings import Settings
from tests.certificates.conftest import TestUser, b64, register
from tests.support import run_server, settings_env

Snapshot = tuple[Any, ...]


@dataclass
class History:
    """One user's writes: state after each, and when each started and returned."""

    states: list[dict[str, Any]]
    started: list[float] = field(default_factory=list)
    returned: list[float] = field(default_factory=list)


@dataclass
class Read:
    user_id: int
    kind: str
    started: float
    ended: float
    observed: Snapshot


def view(state: dict[str, Any], kind: str) -> Snapshot:
    """What a read of ``kind`` shows of a state."""
    if kind == "user":
        return (state["name"],)
    certificates = sorted(state["certificates"].items())
    if kind == "active":
        return tuple(cid for cid, active in certificates if active)
    if kind == "one":
        first = certificates[0] if certificates else None
        return (first,) if first else ()
    return tuple(certificates)


async def writer(
    client: httpx.AsyncClient, user: TestUser, history: History, rng: random.Random, ops: int
) -> None:
    """Random writes, one at a time, recording the state after each."""
    for n in range(ops):
        state = {
            "name": history.states[-1]["name"],
            "certificates": dict(history.states[-1]["certificates"]),
        }
        certificates = state["certificates"]
        choice = rng.random()
        history.started.append(time.monotonic())
        if choice < 0.5 and certificates:
            cid = rng.choice(sorted(certificates))
            certificates[cid] = not certificates[cid]
            path = f"/users/{user.id}/certificates/{cid}" + rng.choice(["", "/active"])
            response = await client.patch(
                path, json={"active": certificates[cid]}, headers=user.headers
            )
            assert response.status_code == 200, response.text
        elif choice < 0.7 or not certificates:
            active = rng.random() < 0.5
            response = await client.post(
                f"/users/{user.id}/certificates",
                json={"private_key": b64(b"k"), "body": f"c{n}", "active": active},
                headers=user.headers,
            )
            assert response.status_code == 201, response.text
            certificates[response.json()["id"]] = active
        elif choice < 0.85:
            cid = rng.choice(sorted(certificates))
            del certificates[cid]
            response = await client.delete(
                f"/users/{user.id}/certificates/{cid}", headers=user.headers
            )
            assert response.status_code == 204, response.text
        else:
            state["name"] = f"name {n}"
            response = await client.patch(
                f"/users/{user.id}", json={"name": state["name"]}, headers=user.headers
            )
            assert response.status_code == 200, response.text
        history.returned.append(time.monotonic())
        history.states.append(state)


async def reader(
    clients: Sequence[httpx.AsyncClient],
    users: Sequence[TestUser],
    reads: list[Read],
    rng: random.Random,
    count: int,
    first_ids: dict[int, int],
) -> None:
    """Random reads of users, full lists, active-only lists and single certificates."""
    for _ in range(count):
        client = rng.choice(clients)
        user = rng.choice(users)
        kind = rng.choice(["user", "all", "active", "all", "one"])
        started = time.monotonic()
        if kind == "user":
            response = await client.get(f"/users/{user.id}", headers=user.headers)
            observed: Snapshot = (response.json()["name"],)
        elif kind == "one":
            cid = first_ids[user.id]
            response = await client.get(
                f"/users/{user.id}/certificates/{cid}", headers=user.headers
            )
            observed = ((cid, response.json()["active"]),) if response.status_code == 200 else ()
        else:
            params = {"limit": 100} | ({"active": "true"} if kind == "active" else {})
            response = await client.get(
                f"/users/{user.id}/certificates", params=params, headers=user.headers
            )
            items = response.json()["items"]
            observed = (
                tuple(item["id"] for item in items)
                if kind == "active"
                else tuple((item["id"], item["active"]) for item in items)
            )
        assert response.status_code in (200, 404), response.text
        reads.append(Read(user.id, kind, started, time.monotonic(), observed))


def stale_reads(
    reads: list[Read], histories: dict[int, History], first_ids: dict[int, int]
) -> list[Read]:
    """Reads that showed a state older than the last write returned before they began."""
    stale = []
    for read in reads:
        history = histories[read.user_id]
        after = sum(1 for t in history.returned if t < read.started)  # S_after or later
        until = sum(1 for t in history.started if t < read.ended)  # at most S_until
        allowed = set()
        for state in history.states[after : until + 1]:
            if read.kind == "one":
                cid = first_ids[read.user_id]
                present = cid in state["certificates"]
                allowed.add(((cid, state["certificates"][cid]),) if present else ())
            else:
                allowed.add(view(state, read.kind))
        if read.observed not in allowed:
            stale.append(read)
    return stale


async def scenario(
    write_client: httpx.AsyncClient,
    read_clients: Sequence[httpx.AsyncClient],
    *,
    seed: int,
    users: int = 2,
    writes: int = 30,
    readers: int = 6,
    reads: int = 60,
) -> tuple[list[Read], list[Read]]:
    """Run writers and readers concurrently; (all reads, stale reads)."""
    rng = random.Random(seed)
    people = [await register(write_client) for _ in range(users)]
    histories: dict[int, History] = {}
    first_ids: dict[int, int] = {}
    for user in people:
        initial: dict[int, bool] = {}
        for i in range(3):
            response = await write_client.post(
                f"/users/{user.id}/certificates",
                json={"private_key": b64(b"k"), "body": f"init {i}", "active": i % 2 == 0},
                headers=user.headers,
            )
            initial[response.json()["id"]] = i % 2 == 0
        first_ids[user.id] = min(initial)
        histories[user.id] = History(states=[{"name": "Ada Lovelace", "certificates": initial}])
    log: list[Read] = []
    await asyncio.gather(
        *(
            writer(write_client, u, histories[u.id], random.Random(rng.random()), writes)
            for u in people
        ),
        *(
            reader(read_clients, people, log, random.Random(rng.random()), reads, first_ids)
            for _ in range(readers)
        ),
    )
    return log, stale_reads(log, histories, first_ids)


def hits() -> float:
    return (
        REGISTRY.get_sample_value(
            "atrium_cache_requests_total", {"cache": "default", "result": "hit"}
        )
        or 0.0
    )


@pytest.mark.parametrize("seed", [1, 2])
async def test_no_stale_reads_under_concurrency(
    client: httpx.AsyncClient, app: FastAPI, seed: int
) -> None:
    before = hits()
    reads, stale = await scenario(client, [client], seed=seed)
    assert len(reads) == 360
    assert stale == []
    assert hits() - before > 50, "the cache must actually serve reads for this to prove anything"
    expected = "RedisBackend" if app.state.redis is not None else "MemoryBackend"
    assert type(app.state.cache.backend).__name__ == expected


async def test_the_check_catches_a_cache_that_is_not_invalidated(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without invalidation the same scenario must report stale reads (the test can fail)."""

    async def forget_nothing(self: Cache, *namespaces: str) -> None:
        return None

    monkeypatch.setattr(Cache, "invalidate", forget_nothing)
    _, stale = await scenario(client, [client], seed=3)
    assert stale, "a cache without invalidation went unnoticed"


@pytest.mark.postgres
async def test_no_stale_reads_across_two_server_processes(
    clean: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    """Writers on one process, readers on both, one shared Redis."""
    env = settings_env(settings)
    with run_server(env, tmp_path / "a") as first, run_server(env, tmp_path / "b") as second:
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=30) as a,
            httpx.AsyncClient(base_url=second.url, timeout=30) as b,
        ):
            reads, stale = await scenario(a, [a, b], seed=11, readers=8, reads=60)
    assert len(reads) == 480
    assert stale == []


def test_memory_backend_is_the_single_worker_default(app: FastAPI) -> None:
    if app.state.redis is None:
        assert isinstance(app.state.cache.backend, MemoryBackend)
