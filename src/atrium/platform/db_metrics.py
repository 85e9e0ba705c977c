"""Database gauges: connection-pool usage and a periodic latency probe.

The probe runs ``SELECT <column> FROM <table> LIMIT 1`` on the configured table every
``ATRIUM_METRICS_DB_PROBE_INTERVAL`` seconds, from the application's lifespan. The names come
from settings, which accept only plain identifiers, and are quoted by the dialect as well: they
are the one piece of SQL here that cannot be a bound parameter.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from atrium.platform.metrics import DB_POOL, DB_PROBE_FAILURES, DB_PROBE_LATENCY
from atrium.settings import Settings

log = logging.getLogger("atrium.metrics")


def probe_statement(engine: AsyncEngine, table: str, column: str) -> TextClause:
    """The probe query for validated ``table`` (``schema.table`` allowed) and ``column``."""
    quote = engine.dialect.identifier_preparer.quote
    table_sql = ".".join(quote(part) for part in table.split("."))
    return text(f"SELECT {quote(column)} FROM {table_sql} LIMIT 1")  # noqa: S608


def sample_pool(engine: AsyncEngine) -> None:
    """Set the pool gauges of this process: connections in use, idle, and the most allowed."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool):  # NullPool/StaticPool: nothing pooled to report
        return
    # QueuePool has no public accessor for max_overflow; -1 means "unbounded".
    overflow = max(int(getattr(pool, "_max_overflow", 0)), 0)
    DB_POOL.labels("in_use").set(pool.checkedout())
    DB_POOL.labels("idle").set(pool.checkedin())
    DB_POOL.labels("max").set(pool.size() + overflow)


async def probe_once(engine: AsyncEngine, statement: TextClause, *, within: float) -> bool:
    """Time one probe query into the latency gauge; count it as a failure when it fails."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(within):
            async with engine.connect() as connection:
                await connection.execute(statement)
    except Exception as exc:
        # The time until failure is still the best latency figure there is (at least this).
        DB_PROBE_LATENCY.set(time.perf_counter() - started)
        DB_PROBE_FAILURES.inc()
        log.warning("database probe failed", extra={"error": type(exc).__name__})
        return False
    DB_PROBE_LATENCY.set(time.perf_counter() - started)
    return True


async def run_db_monitor(engine: AsyncEngine, settings: Settings) -> None:
    """Probe and sample the pool forever (cancelled when the application stops)."""
    statement = probe_statement(
        engine, settings.metrics_db_probe_table, settings.metrics_db_probe_column
    )
    interval = settings.metrics_db_probe_interval
    while True:
        await probe_once(engine, statement, within=min(interval, 5.0))
        sample_pool(engine)
        await asyncio.sleep(interval)
