"""Certificates cache under a read-heavy workload: hit ratio, and throughput against no cache.

    python -m bench certificates          # SQLite + in-process cache (the embedded default)
    ATRIUM_BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    ATRIUM_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 python -m bench certificates

Drives the application in-process (no network, so the figures isolate what the cache saves):
owners read their user record, certificate pages (all / active only) and single certificates,
and now and then (de)activate one (a write that invalidates that owner's lists). Every request
also authenticates its bearer token, which reads the user through the cache. The same workload
then runs with the cache disabled (NullBackend) as the baseline; ratios are printed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

USERS = int(os.environ.get("BENCH_CERT_USERS", "10"))
CERTIFICATES = int(os.environ.get("BENCH_CERT_PER_USER", "20"))
REQUESTS = int(os.environ.get("BENCH_CERT_REQUESTS", "4000"))
CONCURRENCY = int(os.environ.get("BENCH_CERT_CONCURRENCY", "16"))
WRITE_SHARES = [float(x) for x in os.environ.get("BENCH_CERT_WRITE_SHARES", "0.01,0.05").split(",")]


class CountingBackend:
    """Wraps a cache backend and counts hits and misses per kind of namespace."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.counts: Counter[tuple[str, str]] = Counter()

    async def get_versioned(self, namespace: str, key: str) -> tuple[int, bytes | None]:
        version, value = await self.inner.get_versioned(namespace, key)
        kind = namespace.split(":")[1] if ":" in namespace else namespace
        self.counts[(kind, "hit" if value is not None else "miss")] += 1
        return version, value

    async def set(self, namespace: str, version: int, key: str, value: bytes, ttl: int) -> None:
        await self.inner.set(namespace, version, key, value, ttl)

    async def bump(self, namespace: str) -> None:
        await self.inner.bump(namespace)


@dataclass
class Owner:
    id: int
    headers: dict[str, str]
    certificates: list[int]


async def _setup(client: httpx.AsyncClient) -> list[Owner]:
    owners = []
    for n in range(USERS):
        email = f"bench-{uuid.uuid4().hex[:8]}-{n}@example.com"
        password = "bench-password-123"
        user = await client.post(
            "/users", json={"name": f"User {n}", "email": email, "password": password}
        )
        user.raise_for_status()
        token = await client.post("/auth/token", data={"username": email, "password": password})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        owner = Owner(user.json()["id"], headers, [])
        for i in range(CERTIFICATES):
            created = await client.post(
                f"/users/{owner.id}/certificates",
                json={
                    "private_key": base64.b64encode(os.urandom(64)).decode(),
                    "body": "-----BEGIN CERTIFICATE-----\n"
                    + "A" * 800
                    + "\n-----END CERTIFICATE-----",
                    "active": i % 3 != 0,
                },
                headers=headers,
            )
            created.raise_for_status()
            owner.certificates.append(created.json()["id"])
        owners.append(owner)
    return owners


async def _workload(
    client: httpx.AsyncClient, owners: list[Owner], seed: int, write_share: float
) -> tuple[float, int]:
    rng = random.Random(seed)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    writes = 0

    async def worker() -> None:
        nonlocal writes
        while not queue.empty():
            queue.get_nowait()
            owner = owners[
                min(int(rng.paretovariate(1.2)) - 1, len(owners) - 1)
            ]  # a few hot owners
            roll = rng.random()
            base = f"/users/{owner.id}"
            if roll < write_share:
                writes += 1
                cid = rng.choice(owner.certificates)
                response = await client.patch(
                    f"{base}/certificates/{cid}",
                    json={"active": rng.random() < 0.5},
                    headers=owner.headers,
                )
            elif roll < 0.45:
                params = rng.choice([{}, {"active": "true"}, {"active": "false"}, {"limit": 10}])
                response = await client.get(
                    f"{base}/certificates", params=params, headers=owner.headers
                )
            elif roll < 0.75:
                cid = rng.choice(owner.certificates)
                response = await client.get(f"{base}/certificates/{cid}", headers=owner.headers)
            else:
                response = await client.get(base, headers=owner.headers)
            assert response.status_code == 200, response.text

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, writes


async def _run() -> int:
    from atrium.app import create_app
    from atrium.certificates.crypto import new_key_entry
    from atrium.platform.cache import NullBackend
    from atrium.settings import Settings

    pg_admin = os.environ.get("ATRIUM_BENCH_POSTGRES_URL")
    redis_url = os.environ.get("ATRIUM_BENCH_REDIS_URL")
    tmp = Path(tempfile.mkdtemp(prefix="atrium-bench-certs-"))
    database_url = f"sqlite:///{tmp / 'bench.db'}"
    db_name = f"atrium_bench_{uuid.uuid4().hex[:8]}"
    if pg_admin:
        import asyncpg

        admin = await asyncpg.connect(pg_admin)
        await admin.execute(f'CREATE DATABASE "{db_name}"')
        await admin.close()
        database_url = f"{pg_admin.rpartition('/')[0]}/{db_name}"
    prefix = f"atrium-bench-{uuid.uuid4().hex[:8]}:"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp,
        database_url=database_url,
        auto_migrate=True,
        redis_url=redis_url,
        redis_prefix=prefix,
        log_level="WARNING",
        encryption_key=new_key_entry("bench"),
        token_secret=base64.b64encode(os.urandom(32)).decode(),
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                owners = await _setup(client)
                real_backend = app.state.cache.backend
                backend_name = type(real_backend).__name__
                results = []
                for share in WRITE_SHARES:
                    app.state.cache.backend = NullBackend()
                    await _workload(client, owners, 0, share)  # warm the database and code paths
                    baseline_s, _ = await _workload(client, owners, 1, share)
                    counting = CountingBackend(real_backend)
                    app.state.cache.backend = counting
                    await _workload(client, owners, 2, share)  # fill the cache
                    counting.counts.clear()
                    cached_s, writes = await _workload(client, owners, 1, share)
                    results.append((share, baseline_s, cached_s, writes, counting.counts))
            if app.state.redis is not None:
                keys = [k async for k in app.state.redis.scan_iter(match=f"{prefix}*")]
                if keys:
                    await app.state.redis.delete(*keys)
    finally:
        if pg_admin:
            import asyncpg

            admin = await asyncpg.connect(pg_admin)
            await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            await admin.close()

    print(f"database: {'postgresql' if pg_admin else 'sqlite'}, cache backend: {backend_name}")
    print(
        f"{REQUESTS} requests per run, {CONCURRENCY} concurrent, "
        f"{USERS} owners x {CERTIFICATES} certificates"
    )
    for share, baseline_s, cached_s, writes, counts in results:
        print(f"\n-- writes {writes} of {REQUESTS} ({share:.0%} target)")
        print(f"{'namespace':<10} {'hits':>7} {'misses':>7} {'hit ratio':>10}")
        rows = [(kind, counts[(kind, "hit")], counts[(kind, "miss")]) for kind in ("user", "list")]
        rows.append(("all", sum(r[1] for r in rows), sum(r[2] for r in rows)))
        for kind, hits, misses in rows:
            print(f"{kind:<10} {hits:>7} {misses:>7} {hits / max(hits + misses, 1):>10.1%}")
        cached_rps, baseline_rps = REQUESTS / cached_s, REQUESTS / baseline_s
        print(f"with cache:    {cached_rps:8.0f} req/s")
        print(f"without cache: {baseline_rps:8.0f} req/s (NullBackend, same run)")
        print(f"ratio:         {cached_rps / baseline_rps:8.2f}x")
    return 0


def main(argv: list[str]) -> int:
    """Run the benchmark; prints the hit ratio and throughput against the uncached baseline."""
    return asyncio.run(_run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
