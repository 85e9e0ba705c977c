"""Three replicas behind the real nginx, sharing one PostgreSQL and one Redis (no Docker).

The balancer spreads requests over every replica; a rolling restart under steady load and the
SIGKILL of a replica lose no request, because nginx retries idempotent requests on another
replica and a replica given SIGTERM drains before it exits.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from scripts.cluster import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPLICA = "x-atrium-replica"


@dataclass
class Load:
    """What a steady stream of requests through the balancer saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    replicas: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def total(self) -> int:
        """Requests answered or failed."""
        return sum(self.statuses.values()) + len(self.errors)

    async def count(self) -> None:
        """Wake whoever waits for more requests."""
        async with self.progress:
            self.progress.notify_all()

    async def reach(self, total: int, limit: float = 30.0) -> None:
        """Wait until ``total`` requests went through (bounded)."""
        async with asyncio.timeout(limit), self.progress:
            await self.progress.wait_for(lambda: self.total >= total)


async def _steady_load(url: str, path: str, stop: asyncio.Event, load: Load, users: int) -> None:
    """``users`` clients sending ``GET path`` back to back until ``stop`` is set."""

    async def user(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                response = await client.get(path)
            except httpx.HTTPError as exc:
                load.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                load.statuses[response.status_code] += 1
                load.replicas[response.headers.get(REPLICA, "?")] += 1
            await load.count()

    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(user(client) for _ in range(users)))


async def _under_load(cluster: Cluster, path: str, action: object) -> Load:
    """Run ``action`` (a blocking callable) in a thread while steady load flows; return it."""
    assert callable(action)
    stop = asyncio.Event()
    load = Load()
    traffic = asyncio.create_task(_steady_load(cluster.url, path, stop, load, users=4))
    try:
        await load.reach(50)  # load is flowing before the action starts…
        await asyncio.to_thread(action)
        await load.reach(load.total + 50)  # …and still after it ends
    finally:
        stop.set()
        await traffic
    return load


async def test_requests_spread_over_every_replica(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url) as client:
        seen = Counter([(await client.get("/livez")).headers[REPLICA] for _ in range(30)])
    assert set(seen) == {"replica-1", "replica-2", "replica-3"}
    # Round robin: nobody is starved.
    assert min(seen.values()) >= 5


async def test_rolling_restart_under_load_loses_no_request(cluster: Cluster) -> None:
    before = {r.name: r.pid for r in cluster.replicas}
    load = await _under_load(cluster, "/readyz", cluster.rolling_restart)

    after = {r.name: r.pid for r in cluster.replicas}
    assert all(after[name] != before[name] for name in before), "every replica was replaced"
    assert load.errors == []
    assert load.statuses == Counter({200: load.total})
    assert set(load.replicas) == {"replica-1", "replica-2", "replica-3"}


async def test_sigkill_of_a_replica_is_routed_around(cluster: Cluster) -> None:
    victim = cluster.replicas[1]

    def kill() -> None:
        cluster.stop_replica(victim, signal.SIGKILL)

    load = await _under_load(cluster, "/readyz", kill)
    assert load.errors == []
    assert load.statuses == Counter({200: load.total})

    # The balancer keeps routing around the dead replica.
    async with httpx.AsyncClient(base_url=cluster.url) as client:
        after = Counter([(await client.get("/livez")).headers[REPLICA] for _ in range(20)])
    assert set(after) == {"replica-1", "replica-3"}
