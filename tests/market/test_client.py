"""The AlphaVantage client against a real HTTP server replaying recorded responses."""

from __future__ import annotations

import json
import logging

import pytest

from atrium.market.client import (
    AlphaVantageClient,
    DailyLimitReached,
    InvalidApiKey,
    RateLimited,
    Unavailable,
    UnknownSymbol,
)
from tests.market.replay import FIXTURES, ReplayServer, Reply
from tests.support import free_port

SECRET = "S3CRET-KEY-do-not-leak"
RETRIES = 2


def make_client(url: str, *, timeout: float = 2.0, retries: int = RETRIES) -> AlphaVantageClient:
    return AlphaVantageClient(SECRET, url=url, timeout=timeout, retries=retries, backoff=0.01)


def fixture_json(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


async def test_daily_returns_the_document_and_sends_the_documented_query(
    alphavantage: ReplayServer,
) -> None:
    alphavantage.script("IBM", Reply.fixture("ibm_time_series_daily.json"))
    async with make_client(alphavantage.url) as client:
        document = await client.daily("IBM")
    assert document == fixture_json("ibm_time_series_daily.json")
    assert alphavantage.requests == [
        {
            "function": "TIME_SERIES_DAILY",
            "symbol": "IBM",
            "outputsize": "compact",
            "apikey": SECRET,
        }
    ]


async def test_adjusted_layout_is_returned_as_is(alphavantage: ReplayServer) -> None:
    alphavantage.script("AAPL", Reply.fixture("aapl_time_series_daily_adjusted.json"))
    async with make_client(alphavantage.url) as client:
        document = await client.daily("AAPL")
    assert document == fixture_json("aapl_time_series_daily_adjusted.json")


async def test_error_message_is_a_bad_symbol_and_not_retried(alphavantage: ReplayServer) -> None:
    alphavantage.script("NOPE", Reply.fixture("error_message.json"))
    async with make_client(alphavantage.url) as client:
        with pytest.raises(UnknownSymbol, match="NOPE: AlphaVantage does not know this symbol"):
            await client.daily("NOPE")
    assert alphavantage.calls("NOPE") == 1


async def test_rate_limit_note_is_retried_then_succeeds(alphavantage: ReplayServer) -> None:
    alphavantage.script(
        "IBM", Reply.fixture("rate_limit_note.json"), Reply.fixture("ibm_time_series_daily.json")
    )
    async with make_client(alphavantage.url) as client:
        document = await client.daily("IBM")
    assert "Time Series (Daily)" in document
    assert alphavantage.calls("IBM") == 2


async def test_rate_limit_note_that_persists_is_a_clear_error(alphavantage: ReplayServer) -> None:
    alphavantage.script("IBM", Reply.fixture("rate_limit_note.json"))
    async with make_client(alphavantage.url) as client:
        with pytest.raises(RateLimited, match="IBM: AlphaVantage rate limit: Thank you") as info:
            await client.daily("IBM")
    assert not isinstance(info.value, DailyLimitReached)
    assert alphavantage.calls("IBM") == RETRIES + 1


async def test_daily_quota_is_not_retried(alphavantage: ReplayServer) -> None:
    alphavantage.script("IBM", Reply.fixture("daily_limit_information.json"))
    async with make_client(alphavantage.url) as client:
        with pytest.raises(DailyLimitReached, match="daily request quota"):
            await client.daily("IBM")
    assert alphavantage.calls("IBM") == 1


async def test_invalid_key_is_not_retried(alphavantage: ReplayServer) -> None:
    alphavantage.script("IBM", Reply.fixture("invalid_key_information.json"))
    async with make_client(alphavantage.url) as client:
        with pytest.raises(InvalidApiKey, match="rejected the API key") as info:
            await client.daily("IBM")
    assert alphavantage.calls("IBM") == 1
    assert SECRET not in str(info.value)


async def test_slow_answer_times_out_retries_and_never_shows_the_key(
    alphavantage: ReplayServer,
) -> None:
    alphavantage.script("IBM", Reply.fixture("ibm_time_series_daily.json", delay=30))
    async with make_client(alphavantage.url, timeout=0.2, retries=1) as client:
        with pytest.raises(Unavailable, match="did not answer in time") as info:
            await client.daily("IBM")
    assert alphavantage.calls("IBM") == 2
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_slow_then_fast_recovers(alphavantage: ReplayServer) -> None:
    alphavantage.script(
        "IBM",
        Reply.fixture("ibm_time_series_daily.json", delay=30),
        Reply.fixture("ibm_time_series_daily.json"),
    )
    async with make_client(alphavantage.url, timeout=0.2) as client:
        document = await client.daily("IBM")
    assert "Time Series (Daily)" in document
    assert alphavantage.calls("IBM") == 2


async def test_server_error_then_success(alphavantage: ReplayServer) -> None:
    alphavantage.script(
        "IBM",
        Reply(status=500, body=b"Internal Server Error", content_type="text/plain"),
        Reply(status=503, body=b"", content_type="text/plain"),
        Reply.fixture("ibm_time_series_daily.json"),
    )
    async with make_client(alphavantage.url) as client:
        document = await client.daily("IBM")
    assert "Time Series (Daily)" in document
    assert alphavantage.calls("IBM") == 3


async def test_server_error_always_gives_up_after_the_retries(alphavantage: ReplayServer) -> None:
    alphavantage.script("IBM", Reply(status=500, body=b"oops", content_type="text/plain"))
    async with make_client(alphavantage.url) as client:
        with pytest.raises(Unavailable, match="IBM: AlphaVantage answered HTTP 500") as info:
            await client.daily("IBM")
    assert alphavantage.calls("IBM") == RETRIES + 1
    assert SECRET not in str(info.value)


async def test_not_json_is_retried(alphavantage: ReplayServer) -> None:
    alphavantage.script(
        "IBM",
        Reply(body=b"<html>maintenance</html>", content_type="text/html"),
        Reply.fixture("ibm_time_series_daily.json"),
    )
    async with make_client(alphavantage.url) as client:
        assert "Meta Data" in await client.daily("IBM")
    assert alphavantage.calls("IBM") == 2


async def test_unreachable_server_is_unavailable_without_the_key() -> None:
    url = f"http://127.0.0.1:{free_port()}/query?apikey={SECRET}"
    async with make_client(url, retries=1) as client:
        with pytest.raises(Unavailable, match="cannot reach AlphaVantage") as info:
            await client.daily("IBM")
    assert SECRET not in str(info.value)


async def test_logs_mask_the_key(
    alphavantage: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    alphavantage.script(
        "IBM",
        Reply(status=500, body=b"", content_type="text/plain"),
        Reply.fixture("ibm_time_series_daily.json"),
    )
    caplog.set_level(logging.DEBUG)
    async with make_client(alphavantage.url) as client:
        await client.daily("IBM")
    # httpx logs every request's full URL: it must be there, masked.
    assert "HTTP Request: GET" in caplog.text
    assert "apikey=***" in caplog.text
    assert "alphavantage retry" in caplog.text
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.__dict__)


def test_the_key_is_required() -> None:
    with pytest.raises(ValueError, match="API key is required"):
        AlphaVantageClient("")


async def test_a_notice_echoing_the_key_is_masked(alphavantage: ReplayServer) -> None:
    notice = (
        f"We have detected your API key as {SECRET} and our standard API rate limit is 25 "
        "requests per day. Please subscribe to any of the premium plans."
    )
    alphavantage.script("IBM", Reply(body=json.dumps({"Information": notice}).encode()))
    async with make_client(alphavantage.url) as client:
        with pytest.raises(DailyLimitReached) as info:
            await client.daily("IBM")
    assert SECRET not in str(info.value)
    assert "your API key as ***" in str(info.value)
