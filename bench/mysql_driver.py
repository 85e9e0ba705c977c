"""Which async MySQL driver Atrium uses: asyncmy vs aiomysql, the same queries, same run.

    ATRIUM_BENCH_MYSQL_URL=mysql://root@127.0.0.1:3306/test python -m bench.mysql_driver

Both drivers run behind SQLAlchemy's async engine exactly as Atrium builds it (same pool,
same session settings), on a table of its own in a database it creates and drops:

- ``get``: one row by primary key, 32 concurrent clients (the keyed GET of every area);
- ``page``: 100 rows of a page, 8 concurrent clients (list endpoints, reports);
- ``insert``: one-row INSERT + commit, 8 concurrent clients.

Prints queries/s and p50/p99 per driver and the ratio asyncmy / aiomysql per workload.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from atrium.platform.db import _create_mysql_engine, create_engine
from atrium.settings import Settings

DRIVERS = ("asyncmy", "aiomysql")
ROWS = 10_000


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url.replace("mysql://", "mysql+asyncmy://", 1))
    async with engine.begin() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


def _engine(url: str, driver: str) -> AsyncEngine:
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    if driver == "asyncmy":
        return create_engine(settings)
    # Everything as Atrium builds it (pool, session settings), only the driver swapped.
    pool = {"pool_size": 10, "max_overflow": 10, "pool_timeout": 10.0, "pool_pre_ping": True}
    swapped = settings.sqlalchemy_url.replace("mysql+asyncmy", f"mysql+{driver}", 1)
    return _create_mysql_engine(swapped, settings, pool)


async def _load(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, name VARCHAR(200) NOT NULL, "
                "created DATETIME(6) NOT NULL, amount DECIMAL(18,4) NOT NULL)"
            )
        )
        await connection.execute(
            text("INSERT INTO bench_rows VALUES (:id, :name, UTC_TIMESTAMP(6), :amount)"),
            [
                {"id": i, "name": f"row {i} ✓", "amount": round(i / 7, 4)}
                for i in range(1, ROWS + 1)
            ],
        )


async def _timed(
    clients: int, seconds: float, op: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        i = n
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def _workloads(engine: AsyncEngine, seconds: float) -> dict[str, tuple[float, list[float]]]:
    get_one = text("SELECT id, name, created, amount FROM bench_rows WHERE id = :id")
    page = text("SELECT id, name, created, amount FROM bench_rows ORDER BY id LIMIT 100 OFFSET :o")
    insert = text("INSERT INTO bench_inserts (k, v) VALUES (:k, :v)")
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS bench_inserts"))
        await connection.execute(
            text("CREATE TABLE bench_inserts (k CHAR(32) PRIMARY KEY, v TEXT)")
        )

    async def get(i: int) -> None:
        async with engine.connect() as connection:
            (await connection.execute(get_one, {"id": i % ROWS + 1})).one()

    async def read_page(i: int) -> None:
        async with engine.connect() as connection:
            (await connection.execute(page, {"o": (i * 100) % (ROWS - 100)})).all()

    async def write(i: int) -> None:
        async with engine.begin() as connection:
            await connection.execute(insert, {"k": uuid.uuid4().hex, "v": "value 🙂"})

    await _timed(8, 1.0, get)  # warm the pool
    return {
        "get": await _timed(32, seconds, get),
        "page": await _timed(8, seconds, read_page),
        "insert": await _timed(8, seconds, write),
    }


async def _run(admin_url: str, seconds: float, rounds: int) -> None:
    name = f"atrium_bench_driver_{uuid.uuid4().hex[:8]}"
    await _admin(admin_url, f"CREATE DATABASE `{name}`")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        loader = _engine(url, "asyncmy")
        await _load(loader)
        await loader.dispose()
        results: dict[str, dict[str, list[float]]] = {d: {} for d in DRIVERS}
        tails: dict[str, dict[str, list[float]]] = {d: {} for d in DRIVERS}
        for _ in range(rounds):  # alternate, so drift on the box hits both alike
            for driver in DRIVERS:
                engine = _engine(url, driver)
                for workload, (rate, lat) in (await _workloads(engine, seconds)).items():
                    results[driver].setdefault(workload, []).append(rate)
                    tails[driver].setdefault(workload, []).extend(lat)
                await engine.dispose()
        print(f"{'workload':<8} {'driver':<9} {'q/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
        for workload in ("get", "page", "insert"):
            for driver in DRIVERS:
                lat = sorted(tails[driver][workload])
                rate = statistics.median(results[driver][workload])
                p50 = lat[len(lat) // 2] * 1000
                p99 = lat[int(len(lat) * 0.99)] * 1000
                print(f"{workload:<8} {driver:<9} {rate:>8.0f} {p50:>7.2f} {p99:>7.2f}")
            ratio = statistics.median(results["asyncmy"][workload]) / statistics.median(
                results["aiomysql"][workload]
            )
            print(f"{workload:<8} asyncmy / aiomysql = {ratio:.2f}x")
    finally:
        await _admin(admin_url, f"DROP DATABASE IF EXISTS `{name}`")


def main(argv: list[str] | None = None) -> int:
    """Measure both drivers and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    url = os.environ.get("ATRIUM_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
    asyncio.run(_run(url, args.seconds, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
