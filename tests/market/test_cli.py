"""`atrium market sync` against the replay server and `atrium market load`, as processes."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium import cli
from atrium.market import cli as market_cli
from atrium.market.models import FinancialData
from atrium.platform.logging import configure_logging
from atrium.settings import Settings
from tests.market.replay import FIXTURES, ReplayServer, Reply
from tests.support import settings_env

SECRET = "cli-S3CRET-never-printed"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def atrium(settings: Settings, *args: str, **env: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atrium.cli",
        "market",
        *args,
        env=settings_env(settings, ATRIUM_LOG_LEVEL="DEBUG", **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


def replay_env(server: ReplayServer, symbols: str, **extra: str) -> dict[str, str]:
    return {
        "ATRIUM_ALPHAVANTAGE_URL": server.url,
        "ATRIUM_ALPHAVANTAGE_API_KEY": SECRET,
        "ATRIUM_MARKET_SYMBOLS": symbols,
        **extra,
    }


async def stored(session: AsyncSession, symbol: str | None = None) -> int:
    query = select(func.count()).select_from(FinancialData)
    if symbol is not None:
        query = query.where(FinancialData.symbol == symbol)
    return int(await session.scalar(query) or 0)


async def test_sync_stores_two_weeks_and_a_second_run_changes_nothing(
    settings: Settings, session: AsyncSession, client: httpx.AsyncClient, alphavantage: ReplayServer
) -> None:
    alphavantage.script("IBM", Reply.fixture("ibm_time_series_daily.json"))
    alphavantage.script(
        "AAPL",
        Reply(status=500, body=b"upstream hiccup", content_type="text/plain"),
        Reply.fixture("aapl_time_series_daily_adjusted.json"),
    )
    env = replay_env(alphavantage, "IBM,aapl")
    first = await atrium(settings, "sync", **env)
    assert first.code == 0, first.stderr
    assert first.stdout.splitlines() == [
        "IBM: 20 received, 10 kept (last 14 days): 10 inserted, 0 updated, 0 unchanged",
        "AAPL: 20 received, 10 kept (last 14 days): 10 inserted, 0 updated, 0 unchanged",
    ]
    assert alphavantage.calls("AAPL") == 2  # the 500 was retried
    assert {r["apikey"] for r in alphavantage.requests} == {SECRET}

    second = await atrium(settings, "sync", **env)
    assert second.code == 0, second.stderr
    assert second.stdout.splitlines() == [
        "IBM: 20 received, 10 kept (last 14 days): 0 inserted, 0 updated, 10 unchanged",
        "AAPL: 20 received, 10 kept (last 14 days): 0 inserted, 0 updated, 10 unchanged",
    ]
    assert await stored(session) == 20

    for run in (first, second):
        # httpx logged every request URL (at DEBUG/INFO) - with the key masked.
        assert "HTTP Request: GET" in run.stderr
        assert "apikey=***" in run.stderr
        assert SECRET not in run.stdout + run.stderr

    page = (await client.get("/api/financial_data", params={"limit": 1})).json()
    assert page == {
        "data": [
            {
                "symbol": "AAPL",
                "date": "2023-03-13",
                "open_price": "145.59",
                "close_price": "147.53",
                "volume": "79434858",
            }
        ],
        "pagination": {"count": 20, "page": 1, "limit": 1, "pages": 20},
        "info": {"error": ""},
    }


async def test_sync_reports_each_failure_and_keeps_the_rest(
    settings: Settings, session: AsyncSession, alphavantage: ReplayServer
) -> None:
    alphavantage.script("NOPE", Reply.fixture("error_message.json"))
    alphavantage.script("LIMITED", Reply.fixture("rate_limit_note.json"))
    alphavantage.script("QUOTA", Reply.fixture("daily_limit_information.json"))
    alphavantage.script("SLOW", Reply.fixture("ibm_time_series_daily.json", delay=30))
    alphavantage.script("DOWN", Reply(status=502, body=b"bad gateway", content_type="text/plain"))
    alphavantage.script("IBM", Reply.fixture("ibm_time_series_daily.json"))
    run = await atrium(
        settings,
        "sync",
        **replay_env(
            alphavantage,
            "NOPE,LIMITED,QUOTA,SLOW,DOWN,IBM",
            ATRIUM_ALPHAVANTAGE_TIMEOUT="0.3",
            ATRIUM_ALPHAVANTAGE_RETRIES="1",
        ),
    )
    assert run.code == 1
    assert run.stdout.splitlines() == [
        "IBM: 20 received, 10 kept (last 14 days): 10 inserted, 0 updated, 0 unchanged"
    ]
    failures = [line for line in run.stderr.splitlines() if ": failed: " in line]
    assert failures == [
        "NOPE: failed: AlphaVantage does not know this symbol: Invalid API call. Please retry or "
        "visit the documentation (https://www.alphavantage.co/documentation/) for "
        "TIME_SERIES_DAILY.",
        "LIMITED: failed: AlphaVantage rate limit: Thank you for using Alpha Vantage! Our "
        "standard API call frequency is 5 calls per minute and 500 calls per day. Please visit "
        "https://www.alphavantage.co/premium/ if you would like to target a higher API call "
        "frequency.",
        "QUOTA: failed: AlphaVantage daily request quota used up: Thank you for using Alpha "
        "Vantage! Our standard API rate limit is 25 requests per day. Please subscribe to any of "
        "the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily "
        "rate limits.",
        "SLOW: failed: AlphaVantage did not answer in time",
        "DOWN: failed: AlphaVantage answered HTTP 502",
    ]
    assert [alphavantage.calls(s) for s in ("NOPE", "LIMITED", "QUOTA", "SLOW", "DOWN")] == [
        1,
        2,
        1,
        2,
        2,
    ]
    assert SECRET not in run.stdout + run.stderr
    assert await stored(session) == 10


async def test_sync_needs_a_key(settings: Settings, alphavantage: ReplayServer) -> None:
    run = await atrium(
        settings, "sync", ATRIUM_ALPHAVANTAGE_URL=alphavantage.url, ATRIUM_MARKET_SYMBOLS="IBM"
    )
    assert run.code == 1
    assert "ATRIUM_ALPHAVANTAGE_API_KEY is not set" in run.stderr
    assert alphavantage.requests == []


async def test_load_reads_both_layouts_and_reloading_changes_nothing(
    settings: Settings, session: AsyncSession
) -> None:
    files = [
        str(FIXTURES / "ibm_time_series_daily.json"),
        str(FIXTURES / "aapl_time_series_daily_adjusted.json"),
    ]
    first = await atrium(settings, "load", *files)
    assert first.code == 0, first.stderr
    assert first.stdout.splitlines() == [
        "IBM: 20 received, 10 kept (last 14 days): 10 inserted, 0 updated, 0 unchanged",
        "AAPL: 20 received, 10 kept (last 14 days): 10 inserted, 0 updated, 0 unchanged",
    ]
    again = await atrium(settings, "load", *files)
    assert again.stdout.splitlines() == [
        "IBM: 20 received, 10 kept (last 14 days): 0 inserted, 0 updated, 10 unchanged",
        "AAPL: 20 received, 10 kept (last 14 days): 0 inserted, 0 updated, 10 unchanged",
    ]
    everything = await atrium(settings, "load", "--all", files[1])
    assert everything.stdout.splitlines() == [
        "AAPL: 20 received, 20 kept (all days): 10 inserted, 0 updated, 10 unchanged"
    ]
    assert await stored(session, "IBM") == 10
    assert await stored(session, "AAPL") == 20


async def test_load_refuses_what_it_cannot_read(
    settings: Settings, session: AsyncSession, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"Meta Data": ')
    run = await atrium(settings, "load", str(broken))
    assert run.code == 1
    assert f"Error: {broken}: not a JSON document" in run.stderr

    run = await atrium(settings, "load", str(FIXTURES / "error_message.json"))
    assert run.code == 1
    assert "is an AlphaVantage 'Error Message', not prices" in run.stderr

    run = await atrium(settings, "load", str(tmp_path / "missing.json"))
    assert run.code == 2
    assert "does not exist" in run.stderr
    assert await stored(session) == 0


async def test_load_in_process_from_a_running_event_loop(
    settings: Settings, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller already inside an event loop (this test) must still be able to run the CLI.
    monkeypatch.setattr(market_cli, "get_settings", lambda: settings)
    try:
        result = CliRunner().invoke(
            cli.main, ["market", "load", str(FIXTURES / "ibm_time_series_daily.json")]
        )
    finally:
        configure_logging(settings.log_level, json=settings.log_json)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "IBM: 20 received, 10 kept (last 14 days): 10 inserted, 0 updated, 0 unchanged\n"
    )
    assert await stored(session, "IBM") == 10
