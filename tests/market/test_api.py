"""The market API against the clients' contract: whole JSON bodies, errors in the envelope."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.market import service
from atrium.market.chart import render_close_chart
from tests.market.replay import FIXTURES

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
async def loaded(session: AsyncSession) -> None:
    """IBM (TIME_SERIES_DAILY) and AAPL (…_ADJUSTED): 10 trading days each, 2023-03-13..24."""
    for name in ("ibm_time_series_daily.json", "aapl_time_series_daily_adjusted.json"):
        rows = service.parse_daily(json.loads((FIXTURES / name).read_text()))
        await service.upsert_prices(session, service.recent(rows, 14))
    await session.commit()


def record(symbol: str, date: str, open_: str, close: str, volume: str) -> dict[str, str]:
    return {
        "symbol": symbol,
        "date": date,
        "open_price": open_,
        "close_price": close,
        "volume": volume,
    }


# --- GET /api/financial_data ----------------------------------------------------------------


async def test_financial_data_defaults(client: httpx.AsyncClient, loaded: None) -> None:
    response = await client.get("/api/financial_data")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "data": [
            record("AAPL", "2023-03-13", "145.59", "147.53", "79434858"),
            record("IBM", "2023-03-13", "133.49", "134.32", "3888552"),
            record("AAPL", "2023-03-14", "147.38", "148.95", "87348025"),
            record("IBM", "2023-03-14", "135.14", "134.40", "2661319"),
            record("AAPL", "2023-03-15", "150.06", "151.73", "86580852"),
        ],
        "pagination": {"count": 20, "page": 1, "limit": 5, "pages": 4},
        "info": {"error": ""},
    }


async def test_financial_data_filters_and_pages(client: httpx.AsyncClient, loaded: None) -> None:
    response = await client.get(
        "/api/financial_data",
        params={
            "start_date": "2023-03-20",
            "end_date": "2023-03-24",
            "symbol": "IBM",
            "limit": 3,
            "page": 2,
        },
    )
    assert response.status_code == 200
    assert response.json() == {
        "data": [
            record("IBM", "2023-03-23", "142.63", "141.66", "5312389"),
            record("IBM", "2023-03-24", "140.83", "140.72", "5111024"),
        ],
        "pagination": {"count": 5, "page": 2, "limit": 3, "pages": 2},
        "info": {"error": ""},
    }


async def test_financial_data_symbol_is_case_insensitive(
    client: httpx.AsyncClient, loaded: None
) -> None:
    lower = await client.get("/api/financial_data", params={"symbol": "aapl", "limit": 100})
    upper = await client.get("/api/financial_data", params={"symbol": "AAPL", "limit": 100})
    assert lower.json() == upper.json()
    assert lower.json()["pagination"] == {"count": 10, "page": 1, "limit": 100, "pages": 1}


async def test_financial_data_with_no_match_is_an_empty_first_page(
    client: httpx.AsyncClient, loaded: None
) -> None:
    response = await client.get("/api/financial_data", params={"symbol": "MSFT"})
    assert response.status_code == 200
    assert response.json() == {
        "data": [],
        "pagination": {"count": 0, "page": 1, "limit": 5, "pages": 0},
        "info": {"error": ""},
    }


async def test_financial_data_page_out_of_range(client: httpx.AsyncClient, loaded: None) -> None:
    response = await client.get("/api/financial_data", params={"limit": 3, "page": 8})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "data": [],
        "pagination": {"count": 20, "page": 8, "limit": 3, "pages": 7},
        "info": {"error": "page 8 does not exist: there are 7 pages of 3 for 20 records"},
    }


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"start_date": "2023-3-1"}, "start_date must be a date written YYYY-MM-DD"),
        ({"end_date": "yesterday"}, "end_date must be a date written YYYY-MM-DD"),
        ({"start_date": "1700000000"}, "start_date must be a date written YYYY-MM-DD"),
        ({"end_date": "2023-02-30"}, "end_date is not a calendar date"),
        (
            {"start_date": "2023-03-02", "end_date": "2023-03-01"},
            "start_date 2023-03-02 is after end_date 2023-03-01",
        ),
        ({"limit": 0}, "limit must be an integer from 1 to 100"),
        ({"limit": 101}, "limit must be an integer from 1 to 100"),
        ({"limit": "five"}, "limit must be an integer from 1 to 100"),
        ({"page": 0}, "page must be an integer from 1 to 2147483647"),
        ({"page": 2**63}, "page must be an integer from 1 to 2147483647"),
        ({"symbol": "IBM\x00"}, "symbol must be 1 to 20 letters, digits, '.' or '-' (e.g. IBM)"),
        ({"symbol": ""}, "symbol must be 1 to 20 letters, digits, '.' or '-' (e.g. IBM)"),
        (
            {"limit": 0, "start_date": "x"},
            "start_date must be a date written YYYY-MM-DD; limit must be an integer from 1 to 100",
        ),
    ],
)
async def test_financial_data_bad_parameters(
    client: httpx.AsyncClient, params: dict[str, Any], error: str
) -> None:
    response = await client.get("/api/financial_data", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"data": [], "pagination": {}, "info": {"error": error}}


# --- GET /api/statistics ---------------------------------------------------------------------


async def test_statistics(client: httpx.AsyncClient, loaded: None) -> None:
    response = await client.get(
        "/api/statistics",
        params={"start_date": "2023-03-15", "end_date": "2023-03-21", "symbol": "IBM"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "start_date": "2023-03-15",
            "end_date": "2023-03-21",
            "symbol": "IBM",
            "average_daily_open_price": 136.96,
            "average_daily_close_price": 137.89,
            "average_daily_volume": 3889401,
        },
        "info": {"error": ""},
    }
    # Numbers, not strings, in statistics.
    assert '"average_daily_open_price":136.96' in response.text
    assert '"average_daily_volume":3889401' in response.text


async def test_statistics_over_a_whole_period(client: httpx.AsyncClient, loaded: None) -> None:
    response = await client.get(
        "/api/statistics",
        params={"start_date": "2023-01-01", "end_date": "2023-12-31", "symbol": "aapl"},
    )
    assert response.json() == {
        "data": {
            "start_date": "2023-01-01",
            "end_date": "2023-12-31",
            "symbol": "AAPL",
            "average_daily_open_price": 150.44,
            "average_daily_close_price": 151.47,
            "average_daily_volume": 68566546,
        },
        "info": {"error": ""},
    }


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        (
            {"start_date": "2023-01-01", "end_date": "2023-01-31", "symbol": "MSFT"},
            404,
            "no prices stored for symbol MSFT",
        ),
        (
            {"start_date": "2022-01-01", "end_date": "2022-01-31", "symbol": "IBM"},
            404,
            "no IBM prices between 2022-01-01 and 2022-01-31",
        ),
        (
            {"start_date": "2023-01-31", "end_date": "2023-01-01", "symbol": "IBM"},
            400,
            "start_date 2023-01-31 is after end_date 2023-01-01",
        ),
        (
            {"start_date": "2023-01-01", "symbol": "IBM"},
            400,
            "end_date is required",
        ),
        ({}, 400, "start_date is required; end_date is required; symbol is required"),
        (
            {"start_date": "01/01/2023", "end_date": "2023-01-31", "symbol": "IBM"},
            400,
            "start_date must be a date written YYYY-MM-DD",
        ),
        (
            {"start_date": "2023-01-01", "end_date": "2023-01-31", "symbol": "<script>"},
            400,
            "symbol must be 1 to 20 letters, digits, '.' or '-' (e.g. IBM)",
        ),
    ],
)
async def test_statistics_errors(
    client: httpx.AsyncClient, loaded: None, params: dict[str, str], status: int, error: str
) -> None:
    response = await client.get("/api/statistics", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"data": {}, "info": {"error": error}}


# --- OpenAPI ---------------------------------------------------------------------------------


async def test_openapi_documents_the_envelope_errors(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    for path, error_model in (
        ("/api/financial_data", "FinancialDataError"),
        ("/api/statistics", "StatisticsError"),
    ):
        responses = schema["paths"][path]["get"]["responses"]
        for status in ("400", "404"):
            content = responses[status]["content"]
            assert content == {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{error_model}"}}
            }
        assert set(components[error_model]["properties"]) >= {"data", "info"}
    parameters = {p["name"]: p for p in schema["paths"]["/api/statistics"]["get"]["parameters"]}
    assert all(parameters[name]["required"] for name in ("start_date", "end_date", "symbol"))
    chart = schema["paths"]["/api/financial_data/chart.svg"]["get"]["responses"]["200"]
    assert list(chart["content"]) == ["image/svg+xml"]


# --- GET /api/financial_data/chart.svg -------------------------------------------------------


async def test_chart(client: httpx.AsyncClient, loaded: None) -> None:
    response = await client.get(
        "/api/financial_data/chart.svg",
        params={"symbol": "IBM", "start_date": "2023-03-15", "end_date": "2023-03-21"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    root = ET.fromstring(response.text)
    assert root.tag == f"{SVG}svg"
    assert root.findtext(f"{SVG}title") == "IBM closing price, 2023-03-15 to 2023-03-21"
    (line,) = root.iter(f"{SVG}polyline")
    points = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
    assert len(points) == 5  # 15, 16, 17, 20, 21 March
    xs = [x for x, _ in points]
    assert xs == sorted(xs)
    # Closes 133.69, 135.56, 138.00, 139.98, 142.22: rising, so y (downwards) falls.
    ys = [y for _, y in points]
    assert ys == sorted(ys, reverse=True)
    assert not list(root.iter(f"{SVG}script"))


async def test_chart_errors_are_problem_documents(client: httpx.AsyncClient, loaded: None) -> None:
    unknown = await client.get("/api/financial_data/chart.svg", params={"symbol": "MSFT"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["detail"] == "no prices stored for symbol MSFT"
    empty = await client.get(
        "/api/financial_data/chart.svg", params={"symbol": "IBM", "end_date": "2020-01-01"}
    )
    assert empty.status_code == 404
    reversed_range = await client.get(
        "/api/financial_data/chart.svg",
        params={"symbol": "IBM", "start_date": "2023-03-21", "end_date": "2023-03-15"},
    )
    assert reversed_range.status_code == 400
    assert reversed_range.json()["type"] == "https://atrium.dev/problems/invalid-market-query"
    missing = await client.get("/api/financial_data/chart.svg")
    assert missing.status_code == 422


def test_chart_text_is_escaped() -> None:
    from datetime import date
    from decimal import Decimal

    hostile = '<script>alert("x")</script>&'
    svg = render_close_chart(hostile, [(date(2023, 1, 2), Decimal("1.5"))])
    root = ET.fromstring(svg)
    assert root.findtext(f"{SVG}title") == f"{hostile} closing price, 2023-01-02 to 2023-01-02"
    assert not list(root.iter(f"{SVG}script"))
    assert "<script>" not in svg
    (dot,) = root.iter(f"{SVG}circle")
    assert dot.attrib["r"] == "3"
