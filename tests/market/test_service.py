"""Market rules without HTTP: parsing both layouts, the recent window, upserts, SQL statistics."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.market import service
from atrium.market.client import (
    DailyLimitReached,
    InvalidApiKey,
    RateLimited,
    classify_notice,
    mask_secret,
)
from atrium.market.errors import MarketQueryError, NoPricesError, PageOutOfRange, UnknownSymbolError
from atrium.market.models import FinancialData
from atrium.market.schemas import format_price
from atrium.market.service import PriceRow
from tests.market.replay import FIXTURES


def document(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def row(symbol: str, day: str, open_: str, close: str, volume: int) -> PriceRow:
    return PriceRow(symbol, dt.date.fromisoformat(day), Decimal(open_), Decimal(close), volume)


# --- parsing ------------------------------------------------------------------------------


def test_parses_time_series_daily() -> None:
    rows = service.parse_daily(document("ibm_time_series_daily.json"))
    assert len(rows) == 20
    assert rows[0] == row("IBM", "2023-03-24", "140.83", "140.72", 5111024)
    assert rows[-1].date == dt.date(2023, 2, 27)
    assert [r.date for r in rows] == sorted((r.date for r in rows), reverse=True)


def test_parses_time_series_daily_adjusted_with_its_volume_under_6() -> None:
    rows = service.parse_daily(document("aapl_time_series_daily_adjusted.json"))
    assert len(rows) == 20
    # close is the raw close ("4. close"), not "5. adjusted close"; volume is "6. volume".
    assert rows[0] == row("AAPL", "2023-03-24", "152.60", "154.34", 64905836)


def test_symbol_override_and_normalisation() -> None:
    rows = service.parse_daily(document("ibm_time_series_daily.json"), "ibm.x")
    assert {r.symbol for r in rows} == {"IBM.X"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a JSON object"),
        ({"Error Message": "Invalid API call."}, "'Error Message', not prices"),
        ({"Note": "Thank you"}, "'Note', not prices"),
        ({"Meta Data": {}}, "no symbol"),
        ({"Meta Data": {"2. Symbol": "IBM"}}, r"no 'Time Series \(Daily\)' object"),
        (
            {"Meta Data": {"2. Symbol": "IBM"}, "Time Series (Daily)": {"2023-13-01": {}}},
            "'2023-13-01' is not a date",
        ),
        (
            {
                "Meta Data": {"2. Symbol": "IBM"},
                "Time Series (Daily)": {"2023-01-03": {"1. open": "1", "4. close": "2"}},
            },
            "needs '1. open', '4. close' and a volume",
        ),
        (
            {
                "Meta Data": {"2. Symbol": "IBM"},
                "Time Series (Daily)": {
                    "2023-01-03": {"1. open": "abc", "4. close": "2", "5. volume": "1"}
                },
            },
            "2023-01-03 open is not a number",
        ),
        (
            {
                "Meta Data": {"2. Symbol": "IBM"},
                "Time Series (Daily)": {
                    "2023-01-03": {"1. open": "-1", "4. close": "2", "5. volume": "1"}
                },
            },
            "open is out of range",
        ),
        (
            {
                "Meta Data": {"2. Symbol": "IBM"},
                "Time Series (Daily)": {
                    "2023-01-03": {"1. open": "1", "4. close": "NaN", "5. volume": "1"}
                },
            },
            "close is out of range",
        ),
        (
            {
                "Meta Data": {"2. Symbol": "IBM"},
                "Time Series (Daily)": {
                    "2023-01-03": {"1. open": "1", "4. close": "2", "5. volume": "1.5"}
                },
            },
            "volume is not a whole number",
        ),
        (
            {
                "Meta Data": {"2. Symbol": "IBM"},
                "Time Series (Daily)": {
                    "2023-01-03": {"1. open": "1", "4. close": "2", "5. volume": str(2**63)}
                },
            },
            "volume is out of range",
        ),
    ],
)
def test_unreadable_documents_are_clear_errors(doc: Any, message: str) -> None:
    with pytest.raises(service.InvalidDocument, match=message):
        service.parse_daily(doc)


def test_recent_keeps_days_after_latest_minus_window() -> None:
    rows = service.parse_daily(document("ibm_time_series_daily.json"))
    kept = service.recent(rows, 14)
    # Latest is Friday 2023-03-24; the cut-off Friday 2023-03-10 itself is excluded.
    assert [r.date.isoformat() for r in kept] == [
        "2023-03-24",
        "2023-03-23",
        "2023-03-22",
        "2023-03-21",
        "2023-03-20",
        "2023-03-17",
        "2023-03-16",
        "2023-03-15",
        "2023-03-14",
        "2023-03-13",
    ]
    assert len(service.recent(rows, 15)) == 11
    assert service.recent([], 14) == []


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("153.0800", "153.08"),
        ("153.08", "153.08"),
        ("153.1", "153.10"),
        ("153", "153.00"),
        ("153.0812", "153.0812"),
        ("0.0050", "0.005"),
        ("12345678.9000", "12345678.90"),
    ],
)
def test_prices_are_written_with_two_to_four_decimals(stored: str, shown: str) -> None:
    assert format_price(Decimal(stored)) == shown


@pytest.mark.parametrize(
    ("fixture", "kind"),
    [
        ("rate_limit_note.json", RateLimited),
        ("daily_limit_information.json", DailyLimitReached),
        ("invalid_key_information.json", InvalidApiKey),
    ],
)
def test_notices_are_classified(fixture: str, kind: type[Exception]) -> None:
    body = document(fixture)
    (text,) = body.values()
    error = classify_notice("IBM", text)
    assert type(error) is kind


def test_premium_and_burst_notices() -> None:
    premium = "Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe..."
    assert type(classify_notice("IBM", premium)) is InvalidApiKey
    burst = (
        "Thank you for using Alpha Vantage! Please consider spreading out your free API requests "
        "more sparingly (1 request per second). You may subscribe to any of the premium plans at "
        "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per "
        "day), raise the per-second burst limit, and instantly unlock all premium endpoints"
    )
    assert type(classify_notice("IBM", burst)) is RateLimited
    detected = (
        "We have detected your API key as K3Y and our standard API rate limit is 25 requests "
        "per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/"
    )
    assert type(classify_notice("IBM", detected)) is DailyLimitReached


def test_mask_secret() -> None:
    text = "GET https://x/query?function=F&apikey=K3Y&symbol=IBM failed for K3Y"
    assert (
        mask_secret(text, "K3Y")
        == "GET https://x/query?function=F&apikey=***&symbol=IBM failed for ***"
    )
    assert mask_secret("see ?apikey=other&x=1", None) == "see ?apikey=***&x=1"


# --- storage ------------------------------------------------------------------------------


async def count_rows(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(FinancialData)) or 0)


async def test_upsert_twice_changes_nothing_and_updates_what_changed(
    session: AsyncSession,
) -> None:
    rows = service.recent(service.parse_daily(document("ibm_time_series_daily.json")), 14)
    first = await service.upsert_prices(session, rows)
    await session.commit()
    assert first == service.UpsertResult(inserted=10, updated=0, unchanged=0)
    again = await service.upsert_prices(session, rows)
    await session.commit()
    assert again == service.UpsertResult(inserted=0, updated=0, unchanged=10)
    assert await count_rows(session) == 10

    corrected = [
        PriceRow(r.symbol, r.date, r.open_price, Decimal("150.1234"), r.volume)
        if r.date == dt.date(2023, 3, 24)
        else r
        for r in rows
    ]
    extra = row("IBM", "2023-03-27", "141.00", "142.00", 1)
    result = await service.upsert_prices(session, [*corrected, extra])
    await session.commit()
    assert result == service.UpsertResult(inserted=1, updated=1, unchanged=9)
    stored = await session.scalar(
        select(FinancialData.close_price).where(FinancialData.date == dt.date(2023, 3, 24))
    )
    assert stored == Decimal("150.1234")
    assert await count_rows(session) == 11


async def test_duplicate_days_in_one_batch_keep_the_last(session: AsyncSession) -> None:
    result = await service.upsert_prices(
        session,
        [row("IBM", "2023-01-03", "1.00", "1.00", 1), row("IBM", "2023-01-03", "2.00", "2.00", 2)],
    )
    await session.commit()
    assert result == service.UpsertResult(inserted=1)
    listed = await service.list_prices(session)
    assert listed.rows == [row("IBM", "2023-01-03", "2.00", "2.00", 2)]


async def test_prices_keep_four_decimals_exactly(session: AsyncSession) -> None:
    await service.upsert_prices(
        session, [row("PENNY", "2023-01-03", "0.0001", "12345678.9999", 9223372036854775807)]
    )
    await session.commit()
    (stored,) = (await service.list_prices(session, symbol="PENNY")).rows
    assert stored.open_price == Decimal("0.0001")
    assert stored.close_price == Decimal("12345678.9999")
    assert stored.volume == 2**63 - 1


# --- reading ------------------------------------------------------------------------------


async def load_fixtures(session: AsyncSession) -> None:
    for name in ("ibm_time_series_daily.json", "aapl_time_series_daily_adjusted.json"):
        await service.upsert_prices(
            session, service.recent(service.parse_daily(document(name)), 14)
        )
    await session.commit()


async def test_list_orders_by_date_then_symbol_and_counts(session: AsyncSession) -> None:
    await load_fixtures(session)
    page = await service.list_prices(session, page=2, limit=3)
    assert (page.count, page.pages) == (20, 7)
    assert [(r.date.isoformat(), r.symbol) for r in page.rows] == [
        ("2023-03-14", "IBM"),
        ("2023-03-15", "AAPL"),
        ("2023-03-15", "IBM"),
    ]
    ranged = await service.list_prices(
        session, symbol="AAPL", start=dt.date(2023, 3, 20), end=dt.date(2023, 3, 22), limit=100
    )
    assert [r.date.day for r in ranged.rows] == [20, 21, 22]
    empty = await service.list_prices(session, symbol="MSFT")
    assert (empty.rows, empty.count, empty.pages) == ([], 0, 0)


async def test_page_past_the_end_reports_the_real_pagination(session: AsyncSession) -> None:
    await load_fixtures(session)
    with pytest.raises(PageOutOfRange) as info:
        await service.list_prices(session, page=8, limit=3)
    assert info.value.pagination == {"count": 20, "page": 8, "limit": 3, "pages": 7}
    with pytest.raises(PageOutOfRange):
        await service.list_prices(session, symbol="MSFT", page=2)


async def test_statistics_in_sql(session: AsyncSession) -> None:
    await load_fixtures(session)
    stats = await service.statistics(
        session, symbol="IBM", start=dt.date(2023, 3, 15), end=dt.date(2023, 3, 21)
    )
    assert stats == service.PriceStatistics(
        symbol="IBM",
        start_date=dt.date(2023, 3, 15),
        end_date=dt.date(2023, 3, 21),
        average_open=Decimal("136.96"),
        average_close=Decimal("137.89"),
        average_volume=3889401,
    )


async def test_statistics_round_half_up_on_every_backend(session: AsyncSession) -> None:
    await service.upsert_prices(
        session,
        [
            row("HALF", "2023-01-03", "153.80", "0.0050", 1),
            row("HALF", "2023-01-04", "153.81", "0.0050", 2),
        ],
    )
    await session.commit()
    stats = await service.statistics(
        session, symbol="HALF", start=dt.date(2023, 1, 1), end=dt.date(2023, 1, 31)
    )
    assert stats.average_open == Decimal("153.81")  # 153.805
    assert stats.average_close == Decimal("0.01")  # 0.005
    assert stats.average_volume == 2  # 1.5


async def test_statistics_errors(session: AsyncSession) -> None:
    await load_fixtures(session)
    with pytest.raises(UnknownSymbolError, match="no prices stored for symbol MSFT"):
        await service.statistics(
            session, symbol="MSFT", start=dt.date(2023, 1, 1), end=dt.date(2023, 12, 31)
        )
    with pytest.raises(NoPricesError, match="no IBM prices between 2020-01-01 and 2020-12-31"):
        await service.statistics(
            session, symbol="IBM", start=dt.date(2020, 1, 1), end=dt.date(2020, 12, 31)
        )
    with pytest.raises(MarketQueryError, match="start_date 2023-03-02 is after end_date"):
        await service.statistics(
            session, symbol="IBM", start=dt.date(2023, 3, 2), end=dt.date(2023, 3, 1)
        )
