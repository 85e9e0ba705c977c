"""Market read API on 10 years x 500 symbols, with and without the table's indexes.

``python -m bench.market`` (PostgreSQL: ``ATRIUM_BENCH_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``). Creates its own database, loads ~1.26M
rows with COPY, times the endpoints through the application in-process (median of several
requests, after a warm-up), then drops the database. The baseline is the same table without
its unique (symbol, date) constraint and (date, symbol) index, measured in the same run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from atrium.app import create_app
from atrium.settings import Settings

ADMIN_URL = os.environ.get(
    "ATRIUM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SYMBOLS = int(os.environ.get("ATRIUM_BENCH_MARKET_SYMBOLS", "500"))  # S0123 is queried
TRADING_DAYS = 2520  # 10 years x 252
FIRST_DAY = dt.date(2015, 1, 5)
RUNS_WITHOUT, RUNS_WITH = 5, 30

QUERIES: list[tuple[str, str]] = [
    (
        "financial_data: 1 symbol, 1 month",
        "/api/financial_data?symbol=S0123&start_date=2020-03-01&end_date=2020-03-31&limit=5",
    ),
    (
        "financial_data: all symbols, 1 week, page 3",
        "/api/financial_data?start_date=2020-03-02&end_date=2020-03-06&limit=100&page=3",
    ),
    (
        "financial_data: 1 symbol, 10 years, page 20",
        "/api/financial_data?symbol=S0123&limit=100&page=20",
    ),
    ("financial_data: no filter, page 1", "/api/financial_data?limit=5"),
    (
        "statistics: 1 symbol, 1 year",
        "/api/statistics?symbol=S0123&start_date=2019-01-01&end_date=2019-12-31",
    ),
    (
        "statistics: 1 symbol, 10 years",
        "/api/statistics?symbol=S0123&start_date=2015-01-01&end_date=2024-12-31",
    ),
    (
        "chart: 1 symbol, 1 year",
        "/api/financial_data/chart.svg?symbol=S0123&start_date=2019-01-01&end_date=2019-12-31",
    ),
]


async def drop_indexes(connection: asyncpg.Connection) -> list[str]:
    """Drop the table's unique constraints and secondary indexes; return how to recreate them.

    Read from the catalogue, so the benchmark always measures what the migration created.
    """
    constraints = await connection.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = 'financial_data'::regclass AND contype = 'u'"
    )
    indexes = await connection.fetch(
        "SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = 'financial_data'::regclass AND NOT x.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
    )
    recreate = []
    for row in constraints:
        await connection.execute(f'ALTER TABLE financial_data DROP CONSTRAINT "{row["conname"]}"')
        recreate.append(
            f'ALTER TABLE financial_data ADD CONSTRAINT "{row["conname"]}" {row["definition"]}'
        )
    for row in indexes:
        await connection.execute(f'DROP INDEX "{row["name"]}"')
        recreate.append(row["definition"])
    return recreate


def trading_days() -> list[dt.date]:
    """The first TRADING_DAYS weekdays from FIRST_DAY."""
    days: list[dt.date] = []
    day = FIRST_DAY
    while len(days) < TRADING_DAYS:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def rows() -> Iterator[tuple[str, dt.date, Decimal, Decimal, int]]:
    """Random-walk prices, in the order a daily sync appends them (by date, then symbol)."""
    rng = random.Random(20231)
    prices = [rng.uniform(5, 500) for _ in range(SYMBOLS)]
    names = [f"S{i:04d}" for i in range(SYMBOLS)]
    for day in trading_days():
        for i, name in enumerate(names):
            open_ = prices[i] * rng.uniform(0.98, 1.02)
            close = open_ * rng.uniform(0.97, 1.03)
            prices[i] = close
            yield (
                name,
                day,
                Decimal(f"{open_:.4f}"),
                Decimal(f"{close:.4f}"),
                rng.randint(100_000, 90_000_000),
            )


async def time_queries(client: httpx.AsyncClient, runs: int) -> dict[str, float]:
    """Median milliseconds per query (after one warm-up request each)."""
    medians: dict[str, float] = {}
    for label, url in QUERIES:
        warm = await client.get(url)
        if warm.status_code != 200:
            raise RuntimeError(f"{url} answered {warm.status_code}: {warm.text[:300]}")
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            response = await client.get(url)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        medians[label] = statistics.median(samples)
    return medians


async def run(admin_url: str) -> int:
    """Create the database, load, measure, report, drop."""
    name = f"atrium_bench_market_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"{admin_url.rpartition('/')[0]}/{name}"
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                env="test",
                data_dir=Path(data_dir),
                database_url=url,
                auto_migrate=True,
                log_level="WARNING",
                db_statement_timeout_ms=0,
                # The market reads need an API key since the platform's keys landed; open them
                # to this in-process client instead, and never let the limiter interfere.
                anonymous_scopes=["market:read"],
                rate_limit=10**9,
            )
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                return await measure(app, url)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def measure(app: object, url: str) -> int:
    """Load the rows, then time every query without and with the indexes."""
    connection = await asyncpg.connect(url)
    try:
        recreate = await drop_indexes(connection)
        started = time.perf_counter()
        await connection.copy_records_to_table(
            "financial_data",
            records=rows(),
            columns=["symbol", "date", "open_price", "close_price", "volume"],
        )
        loaded = time.perf_counter() - started
        count = await connection.fetchval("SELECT count(*) FROM financial_data")
        await connection.execute("VACUUM ANALYZE financial_data")
        print(f"loaded {count:,} rows ({SYMBOLS} symbols x {TRADING_DAYS} days) in {loaded:.1f}s")

        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            without = await time_queries(client, RUNS_WITHOUT)
            started = time.perf_counter()
            for statement in recreate:
                print(f"  {statement}")
                await connection.execute(statement)
            await connection.execute("VACUUM ANALYZE financial_data")
            print(f"built the indexes above in {time.perf_counter() - started:.1f}s")
            with_indexes = await time_queries(client, RUNS_WITH)
    finally:
        await connection.close()

    width = max(len(label) for label, _ in QUERIES)
    print(f"\n{'query':<{width}}  {'no index':>10}  {'indexed':>10}  {'speed-up':>9}")
    for label, _ in QUERIES:
        before, after = without[label], with_indexes[label]
        print(f"{label:<{width}}  {before:>8.1f}ms  {after:>8.2f}ms  {before / after:>8.1f}x")
    print(
        f"\nmedians of {RUNS_WITHOUT} (no index) / {RUNS_WITH} (indexed) requests through the "
        "app in-process (HTTP handling included)"
    )
    return 0


def main(argv: list[str]) -> int:
    """Entry point for ``python -m bench.market`` and ``python -m bench market``."""
    admin_url = argv[0] if argv else ADMIN_URL
    return asyncio.run(run(admin_url))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
