"""``service.sync_symbol`` end to end (replay server → database) and the table's migration."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from prometheus_client import REGISTRY
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from atrium.market import service
from atrium.market.client import AlphaVantageClient, UnknownSymbol
from atrium.market.models import FinancialData
from atrium.platform.db import Base
from atrium.platform.models import import_all_models
from tests.market.replay import ReplayServer, Reply


def syncs(symbol: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "atrium_market_syncs_total", {"symbol": symbol, "outcome": outcome}
    )
    return value or 0.0


async def test_sync_symbol_stores_the_window_and_counts_outcomes(
    session: AsyncSession, alphavantage: ReplayServer
) -> None:
    alphavantage.script("IBM", Reply.fixture("ibm_time_series_daily.json"))
    alphavantage.script("NOPE", Reply.fixture("error_message.json"))
    ok_before, bad_before = syncs("IBM", "ok"), syncs("NOPE", "bad_symbol")
    async with AlphaVantageClient("k", url=alphavantage.url, backoff=0.01) as client:
        result = await service.sync_symbol(client, session, "ibm", 14)
        with pytest.raises(UnknownSymbol):
            await service.sync_symbol(client, session, "NOPE", 14)
    await session.commit()
    assert result == service.SyncResult(
        symbol="IBM", received=20, kept=10, stored=service.UpsertResult(inserted=10)
    )
    assert syncs("IBM", "ok") == ok_before + 1
    assert syncs("NOPE", "bad_symbol") == bad_before + 1
    count = await session.scalar(select(func.count()).select_from(FinancialData))
    assert count == 10


async def test_migration_creates_the_modelled_table(engine: AsyncEngine) -> None:
    import_all_models()

    def inspect_table(connection: Connection) -> tuple[list[Any], dict[str, Any]]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = [
            d for d in compare_metadata(context, Base.metadata) if "financial_data" in repr(d)
        ]
        inspector = inspect(connection)
        return differences, {
            "unique": inspector.get_unique_constraints("financial_data"),
            "indexes": inspector.get_indexes("financial_data"),
            "columns": {c["name"]: str(c["type"]) for c in inspector.get_columns("financial_data")},
        }

    async with engine.connect() as connection:
        differences, table = await connection.run_sync(inspect_table)
    assert differences == []
    assert [u["column_names"] for u in table["unique"]] == [["symbol", "date"]]
    assert ["date", "symbol"] in [i["column_names"] for i in table["indexes"]]
    # MySQL reflects NUMERIC as its synonym DECIMAL.
    assert table["columns"]["open_price"].replace("DECIMAL", "NUMERIC").startswith("NUMERIC(18, 4)")
    assert table["columns"]["volume"] == "BIGINT"


@pytest.mark.postgres
@pytest.mark.only_on("postgresql", reason="INCLUDE columns exist on PostgreSQL only")
async def test_postgres_unique_index_covers_the_values(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        definition = await connection.scalar(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname = 'uq_financial_data_symbol_date'"
            )
        )
    assert definition == "UNIQUE (symbol, date) INCLUDE (open_price, close_price, volume)"
