"""Rules of the market domain: parse AlphaVantage documents, keep the recent window, upsert,
and answer the read API with SQL (counts and averages are computed by the database).

Services never commit: the request's session (API) or the CLI commits at the boundary.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.market.client import AlphaVantageClient, AlphaVantageError
from atrium.market.errors import (
    MarketQueryError,
    NoPricesError,
    PageOutOfRange,
    UnknownSymbolError,
)
from atrium.market.models import PRICE_SCALE, SYMBOL_MAX_LENGTH, FinancialData
from atrium.platform.metrics import MARKET_SYNCS
from atrium.platform.sql import code_point_order, upsert

log = logging.getLogger("atrium.market")

SERIES_KEY = "Time Series (Daily)"
# TIME_SERIES_DAILY puts the volume under "5. volume"; the older TIME_SERIES_DAILY_ADJUSTED
# has "5. adjusted close" there and the volume under "6. volume".
VOLUME_KEYS = ("5. volume", "6. volume")
_PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_SCALE)
_CENT = Decimal("0.01")
# An average of N prices (multiples of 0.0001) lies at least 0.0001/N from a rounding
# boundary unless exactly on it; one of N volumes at least 0.5/N. Float noise is ~1e-13.
_PRICE_NOISE = Decimal("1e-8")
_VOLUME_NOISE = Decimal("1e-6")
_UPSERT_CHUNK = 1000
_MAX_PRICE = Decimal(10) ** (18 - PRICE_SCALE)
_MAX_VOLUME = 2**63 - 1


class InvalidDocument(ValueError):
    """A saved or fetched AlphaVantage document we cannot read."""


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One day of one symbol, as stored."""

    symbol: str
    date: dt.date
    open_price: Decimal
    close_price: Decimal
    volume: int


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What an upsert changed."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class SyncResult:
    """One symbol's sync: records in the response, kept in the window, and what changed."""

    symbol: str
    received: int
    kept: int
    stored: UpsertResult


@dataclass(frozen=True, slots=True)
class PricePage:
    """One page of records with the total count."""

    rows: list[PriceRow]
    count: int
    page: int
    limit: int

    @property
    def pages(self) -> int:
        """Number of pages for ``count`` records."""
        return math.ceil(self.count / self.limit)


@dataclass(frozen=True, slots=True)
class PriceStatistics:
    """Averages over a period, already rounded as the contract says."""

    symbol: str
    start_date: dt.date
    end_date: dt.date
    average_open: Decimal
    average_close: Decimal
    average_volume: int


# --- parsing ------------------------------------------------------------------------------


def _decimal(value: object, what: str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidDocument(f"{what} is not a number") from None
    if not number.is_finite() or number < 0 or number >= _MAX_PRICE:
        raise InvalidDocument(f"{what} is out of range")
    return number.quantize(_PRICE_QUANTUM, rounding=ROUND_HALF_UP)


def _volume(value: object, what: str) -> int:
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidDocument(f"{what} is not a whole number")
    volume = int(text)
    if volume > _MAX_VOLUME:
        raise InvalidDocument(f"{what} is out of range")
    return volume


def normalise_symbol(symbol: str) -> str:
    """Symbols are stored upper-case (``ibm`` and ``IBM`` are one symbol)."""
    cleaned = symbol.strip().upper()
    if not cleaned or len(cleaned) > SYMBOL_MAX_LENGTH or "\x00" in cleaned:
        raise InvalidDocument(f"invalid symbol {symbol!r}")
    return cleaned


def parse_daily(document: Mapping[str, Any], symbol: str | None = None) -> list[PriceRow]:
    """Rows of a ``TIME_SERIES_DAILY`` or ``TIME_SERIES_DAILY_ADJUSTED`` document, newest first.

    ``symbol`` overrides the document's ``Meta Data`` (needed when it has none).
    """
    if not isinstance(document, Mapping):
        raise InvalidDocument("the document is not a JSON object")
    for field in ("Error Message", "Note", "Information"):
        if field in document and SERIES_KEY not in document:
            raise InvalidDocument(f"the document is an AlphaVantage {field!r}, not prices")
    if symbol is None:
        meta = document.get("Meta Data")
        symbol = meta.get("2. Symbol") if isinstance(meta, Mapping) else None
        if not isinstance(symbol, str):
            raise InvalidDocument("no symbol: the document has no 'Meta Data' / '2. Symbol'")
    symbol = normalise_symbol(symbol)
    series = document.get(SERIES_KEY)
    if not isinstance(series, Mapping):
        raise InvalidDocument(f"no {SERIES_KEY!r} object in the document")
    rows: list[PriceRow] = []
    for day, values in series.items():
        try:
            date = dt.date.fromisoformat(str(day))
        except ValueError:
            raise InvalidDocument(f"{day!r} is not a date") from None
        if not isinstance(values, Mapping):
            raise InvalidDocument(f"{day}: the entry is not an object")
        volume_key = next((key for key in VOLUME_KEYS if key in values), None)
        if volume_key is None or "1. open" not in values or "4. close" not in values:
            raise InvalidDocument(f"{day}: needs '1. open', '4. close' and a volume")
        rows.append(
            PriceRow(
                symbol=symbol,
                date=date,
                open_price=_decimal(values["1. open"], f"{day} open"),
                close_price=_decimal(values["4. close"], f"{day} close"),
                volume=_volume(values[volume_key], f"{day} volume"),
            )
        )
    rows.sort(key=lambda row: row.date, reverse=True)
    return rows


def recent(rows: Sequence[PriceRow], days: int) -> list[PriceRow]:
    """Rows dated after (latest date - ``days`` calendar days): 14 days = two trading weeks."""
    if not rows:
        return []
    cutoff = max(row.date for row in rows) - dt.timedelta(days=days)
    return [row for row in rows if row.date > cutoff]


# --- writing ------------------------------------------------------------------------------


async def upsert_prices(session: AsyncSession, rows: Iterable[PriceRow]) -> UpsertResult:
    """Insert new days, update changed ones, leave identical ones alone (so a rerun is a no-op)."""
    latest: dict[tuple[str, dt.date], PriceRow] = {}
    for row in rows:
        latest[(row.symbol, row.date)] = row
    if not latest:
        return UpsertResult()
    table = FinancialData.__table__
    inserted = updated = unchanged = 0
    keys = list(latest)
    for start in range(0, len(keys), _UPSERT_CHUNK):
        chunk = keys[start : start + _UPSERT_CHUNK]
        existing_rows = await session.execute(
            select(
                table.c.symbol,
                table.c.date,
                table.c.open_price,
                table.c.close_price,
                table.c.volume,
            ).where(tuple_(table.c.symbol, table.c.date).in_(chunk))
        )
        existing = {(r.symbol, r.date): r for r in existing_rows}
        pending: list[dict[str, Any]] = []
        for key in chunk:
            row = latest[key]
            old = existing.get(key)
            if old is None:
                inserted += 1
            elif (
                Decimal(old.open_price) == row.open_price
                and Decimal(old.close_price) == row.close_price
                and old.volume == row.volume
            ):
                unchanged += 1
                continue
            else:
                updated += 1
            pending.append(
                {
                    "symbol": row.symbol,
                    "date": row.date,
                    "open_price": row.open_price,
                    "close_price": row.close_price,
                    "volume": row.volume,
                }
            )
        if not pending:
            continue
        # An upsert keeps a concurrent sync from failing on the unique (symbol, date).
        statement = upsert(
            table,
            keys=(table.c.symbol, table.c.date),
            update=(table.c.open_price, table.c.close_price, table.c.volume),
        )
        await session.execute(statement, pending)
    return UpsertResult(inserted=inserted, updated=updated, unchanged=unchanged)


async def sync_symbol(
    client: AlphaVantageClient, session: AsyncSession, symbol: str, days: int
) -> SyncResult:
    """Fetch ``symbol``'s daily series, keep the last ``days`` calendar days and upsert them."""
    symbol = normalise_symbol(symbol)
    try:
        document = await client.daily(symbol)
        rows = parse_daily(document, symbol)
    except AlphaVantageError as exc:
        MARKET_SYNCS.labels(symbol, exc.outcome).inc()
        raise
    except InvalidDocument:
        MARKET_SYNCS.labels(symbol, "bad_response").inc()
        raise
    kept = recent(rows, days)
    stored = await upsert_prices(session, kept)
    MARKET_SYNCS.labels(symbol, "ok").inc()
    log.info(
        "market sync",
        extra={
            "symbol": symbol,
            "received": len(rows),
            "kept": len(kept),
            "inserted": stored.inserted,
            "updated": stored.updated,
            "unchanged": stored.unchanged,
        },
    )
    return SyncResult(symbol=symbol, received=len(rows), kept=len(kept), stored=stored)


# --- reading ------------------------------------------------------------------------------


def _check_range(start: dt.date | None, end: dt.date | None) -> None:
    if start is not None and end is not None and start > end:
        raise MarketQueryError(f"start_date {start} is after end_date {end}")


def _filters(
    symbol: str | None, start: dt.date | None, end: dt.date | None
) -> list[ColumnElement[bool]]:
    table = FinancialData.__table__
    conditions: list[ColumnElement[bool]] = []
    if symbol is not None:
        conditions.append(table.c.symbol == symbol)
    if start is not None:
        conditions.append(table.c.date >= start)
    if end is not None:
        conditions.append(table.c.date <= end)
    return conditions


def _row(record: Any) -> PriceRow:
    return PriceRow(
        symbol=record.symbol,
        date=record.date,
        open_price=Decimal(record.open_price),
        close_price=Decimal(record.close_price),
        volume=int(record.volume),
    )


async def list_prices(
    session: AsyncSession,
    *,
    symbol: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    page: int = 1,
    limit: int = 5,
) -> PricePage:
    """One page of the matching records, by date then symbol, with their total count."""
    _check_range(start, end)
    table = FinancialData.__table__
    where = _filters(symbol, start, end)
    count = int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)
    result = PricePage(rows=[], count=count, page=page, limit=limit)
    if page > max(result.pages, 1):
        raise PageOutOfRange(
            f"page {page} does not exist: there {'is' if result.pages == 1 else 'are'} "
            f"{result.pages} page{'' if result.pages == 1 else 's'} of {limit} "
            f"for {count} record{'' if count == 1 else 's'}",
            pagination={"count": count, "page": page, "limit": limit, "pages": result.pages},
        )
    if count == 0:
        return result
    records = await session.execute(
        select(
            table.c.symbol,
            table.c.date,
            table.c.open_price,
            table.c.close_price,
            table.c.volume,
        )
        .where(*where)
        .order_by(table.c.date, code_point_order(table.c.symbol))
        .limit(limit)
        .offset((page - 1) * limit)
    )
    return PricePage(rows=[_row(r) for r in records], count=count, page=page, limit=limit)


def _round(value: object, quantum: Decimal, noise: Decimal) -> Decimal:
    """Round half away from zero, as PostgreSQL's exact ``numeric`` does.

    SQLite's AVG is a float, so 153.805 may come back as 153.80499999999998: dropping the
    float noise first (``noise`` is far below any distance a real average can have from a
    rounding boundary) makes both backends agree.
    """
    if isinstance(value, float):
        return Decimal(value).quantize(noise).quantize(quantum, rounding=ROUND_HALF_UP)
    return Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_UP)


async def statistics(
    session: AsyncSession, *, symbol: str, start: dt.date, end: dt.date
) -> PriceStatistics:
    """Average open, close and volume of ``symbol`` over [start, end], computed in SQL."""
    _check_range(start, end)
    table = FinancialData.__table__
    result = await session.execute(
        select(
            func.count(),
            func.avg(table.c.open_price),
            func.avg(table.c.close_price),
            func.avg(table.c.volume),
        ).where(*_filters(symbol, start, end))
    )
    count, average_open, average_close, average_volume = result.one()
    if not count:
        known = await session.scalar(select(table.c.id).where(table.c.symbol == symbol).limit(1))
        if known is None:
            raise UnknownSymbolError(f"no prices stored for symbol {symbol}")
        raise NoPricesError(f"no {symbol} prices between {start} and {end}")
    return PriceStatistics(
        symbol=symbol,
        start_date=start,
        end_date=end,
        average_open=_round(average_open, _CENT, _PRICE_NOISE),
        average_close=_round(average_close, _CENT, _PRICE_NOISE),
        average_volume=int(_round(average_volume, Decimal(1), _VOLUME_NOISE)),
    )


async def close_prices(
    session: AsyncSession,
    *,
    symbol: str,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> list[tuple[dt.date, Decimal]]:
    """``symbol``'s closing prices over the range, oldest first (for the chart)."""
    _check_range(start, end)
    table = FinancialData.__table__
    records = await session.execute(
        select(table.c.date, table.c.close_price)
        .where(*_filters(symbol, start, end))
        .order_by(table.c.date)
    )
    points = [(r.date, Decimal(r.close_price)) for r in records]
    if not points:
        known = await session.scalar(select(table.c.id).where(table.c.symbol == symbol).limit(1))
        if known is None:
            raise UnknownSymbolError(f"no prices stored for symbol {symbol}")
        raise NoPricesError(f"no {symbol} prices in the requested range")
    return points
