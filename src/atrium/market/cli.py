"""``atrium market …``: fetch prices from AlphaVantage, or load a saved response offline."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atrium.market import service
from atrium.market.client import AlphaVantageClient, AlphaVantageError
from atrium.platform.db import create_engine, create_sessionmaker
from atrium.platform.logging import configure_logging
from atrium.platform.migrate import upgrade
from atrium.settings import Settings, get_settings

T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, also when called from a running loop (e.g. a test invoking the CLI)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coroutine)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="atrium-market-cli")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def _logs_to_stderr(settings: Settings) -> None:
    # stdout carries the command's report; structured logs go beside it on stderr.
    configure_logging(settings.log_level, json=settings.log_json)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_atrium", False) and isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


@asynccontextmanager
async def _sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings)
    try:
        if settings.should_auto_migrate:
            await upgrade(engine)
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _report(
    symbol: str, received: int, kept: int, days: int | None, stored: service.UpsertResult
) -> str:
    window = f"last {days} days" if days is not None else "all days"
    return (
        f"{symbol}: {received} received, {kept} kept ({window}): "
        f"{stored.inserted} inserted, {stored.updated} updated, {stored.unchanged} unchanged"
    )


@click.group()
def market() -> None:
    """Market data: daily prices from AlphaVantage."""


@market.command()
@click.argument("symbols", nargs=-1)
def sync(symbols: tuple[str, ...]) -> None:
    """Fetch SYMBOLS (default: ATRIUM_MARKET_SYMBOLS) and upsert their recent days.

    Keeps the days after (latest day - ATRIUM_MARKET_DAYS). Running it twice changes nothing.
    Exits 1 if any symbol failed (the others are still stored).
    """
    settings = get_settings()
    _logs_to_stderr(settings)
    if (
        settings.alphavantage_api_key is None
        or not settings.alphavantage_api_key.get_secret_value()
    ):
        raise click.ClickException(
            "ATRIUM_ALPHAVANTAGE_API_KEY is not set "
            "(a free key: https://www.alphavantage.co/support/#api-key)"
        )
    wanted = [s.upper() for s in symbols] or settings.market_symbols
    if not wanted:
        raise click.ClickException("no symbols: pass some or set ATRIUM_MARKET_SYMBOLS")
    failures = _run(_sync(settings, wanted))
    if failures:
        sys.exit(1)


async def _sync(settings: Settings, symbols: list[str]) -> int:
    assert settings.alphavantage_api_key is not None
    failures = 0
    client = AlphaVantageClient(
        settings.alphavantage_api_key.get_secret_value(),
        url=settings.alphavantage_url,
        timeout=settings.alphavantage_timeout,
        retries=settings.alphavantage_retries,
    )
    async with _sessions(settings) as sessions, client:
        for symbol in symbols:
            try:
                async with sessions() as session:
                    result = await service.sync_symbol(
                        client, session, symbol, settings.market_days
                    )
                    await session.commit()
            except (AlphaVantageError, service.InvalidDocument) as exc:
                failures += 1
                reason = exc.message if isinstance(exc, AlphaVantageError) else str(exc)
                click.echo(f"{symbol}: failed: {client.mask(reason)}", err=True)
                continue
            click.echo(
                _report(
                    result.symbol, result.received, result.kept, settings.market_days, result.stored
                )
            )
    return failures


@market.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--symbol", help="Symbol of the data (default: the file's 'Meta Data').")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Keep the days after (latest day - DAYS) [default: ATRIUM_MARKET_DAYS].",
)
@click.option("--all", "keep_all", is_flag=True, help="Keep every day of the file.")
def load(files: tuple[Path, ...], symbol: str | None, days: int | None, keep_all: bool) -> None:
    """Load saved AlphaVantage responses (TIME_SERIES_DAILY or _DAILY_ADJUSTED JSON) offline.

    Applies the same window as ``sync`` unless --all is given; reloading changes nothing.
    """
    settings = get_settings()
    _logs_to_stderr(settings)
    window = None if keep_all else (days or settings.market_days)
    documents = []
    for path in files:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            rows = service.parse_daily(document, symbol)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise click.ClickException(f"{path}: not a JSON document ({exc})") from None
        except service.InvalidDocument as exc:
            raise click.ClickException(f"{path}: {exc}") from None
        documents.append(rows)
    _run(_load(settings, documents, window))


async def _load(
    settings: Settings, documents: list[list[service.PriceRow]], days: int | None
) -> None:
    async with _sessions(settings) as sessions, sessions() as session:
        reports = []
        for rows in documents:
            kept = rows if days is None else service.recent(rows, days)
            stored = await service.upsert_prices(session, kept)
            name = rows[0].symbol if rows else "(empty)"
            reports.append(_report(name, len(rows), len(kept), days, stored))
        await session.commit()
    for line in reports:
        click.echo(line)
