"""HTTP endpoints of the market domain (thin: parse, call the service, shape the response).

``/api/financial_data`` and ``/api/statistics`` keep an existing client contract: every answer,
errors included, is the ``{"data", ["pagination",] "info": {"error"}}`` envelope. Their route
class catches parameter validation and domain errors and answers in that envelope (400 for a
bad request, 404 for an unknown symbol or a page past the end) instead of problem+json.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from atrium.market import service
from atrium.market.chart import render_close_chart
from atrium.market.errors import MarketQueryError, PageOutOfRange
from atrium.market.schemas import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_PAGE,
    SYMBOL_PATTERN,
    FinancialDataError,
    FinancialDataResponse,
    IsoDate,
    OptionalIsoDate,
    Pagination,
    PriceRecord,
    Statistics,
    StatisticsError,
    StatisticsResponse,
    describe_errors,
    format_price,
)
from atrium.platform.db import SessionDep
from atrium.platform.errors import problem_responses

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class _EnvelopeRoute(APIRoute):
    """A route that answers every client error in the market contract's envelope."""

    def error_body(self, message: str, exc: MarketQueryError | None) -> dict[str, Any]:
        """The envelope of a failed request (per endpoint)."""
        raise NotImplementedError

    def get_route_handler(self) -> Handler:
        """Wrap FastAPI's handler: validation and domain errors become envelopes."""
        handler = super().get_route_handler()

        async def envelope_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return JSONResponse(self.error_body(describe_errors(exc.errors()), None), 400)
            except MarketQueryError as exc:
                message = exc.detail or exc.default_title()
                return JSONResponse(self.error_body(message, exc), exc.status)

        return envelope_handler


class _FinancialDataRoute(_EnvelopeRoute):
    def error_body(self, message: str, exc: MarketQueryError | None) -> dict[str, Any]:
        pagination = exc.pagination if isinstance(exc, PageOutOfRange) else {}
        return {"data": [], "pagination": pagination, "info": {"error": message}}


class _StatisticsRoute(_EnvelopeRoute):
    def error_body(self, message: str, exc: MarketQueryError | None) -> dict[str, Any]:
        return {"data": {}, "info": {"error": message}}


class SvgResponse(Response):
    """An SVG image."""

    media_type = "image/svg+xml"


router = APIRouter()
_financial = APIRouter(tags=["market"], route_class=_FinancialDataRoute)
_statistics = APIRouter(tags=["market"], route_class=_StatisticsRoute)

_DATE_HELP = "Inclusive, YYYY-MM-DD."


def _upper(symbol: str | None) -> str | None:
    return symbol.upper() if symbol is not None else None


@_financial.get(
    "/api/financial_data",
    response_model=FinancialDataResponse,
    summary="Daily prices",
    responses={
        400: {
            "model": FinancialDataError,
            "description": "A parameter is invalid (bad date, start after end, limit...).",
        },
        404: {
            "model": FinancialDataError,
            "description": "The page lies beyond the last one (pagination shows the real count).",
        },
    },
)
async def financial_data(
    session: SessionDep,
    start_date: Annotated[
        OptionalIsoDate, Query(description=f"First day. {_DATE_HELP}", examples=["2023-01-01"])
    ] = None,
    end_date: Annotated[
        OptionalIsoDate, Query(description=f"Last day. {_DATE_HELP}", examples=["2023-01-31"])
    ] = None,
    symbol: Annotated[
        str | None,
        Query(pattern=SYMBOL_PATTERN, description="Only this symbol.", examples=["IBM"]),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Records per page (1-{MAX_LIMIT}).")
    ] = DEFAULT_LIMIT,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number, from 1.")] = 1,
) -> FinancialDataResponse:
    """Daily prices filtered by period and symbol, ordered by date then symbol, a page at a time."""
    result = await service.list_prices(
        session, symbol=_upper(symbol), start=start_date, end=end_date, page=page, limit=limit
    )
    return FinancialDataResponse(
        data=[
            PriceRecord(
                symbol=row.symbol,
                date=row.date,
                open_price=format_price(row.open_price),
                close_price=format_price(row.close_price),
                volume=str(row.volume),
            )
            for row in result.rows
        ],
        pagination=Pagination(
            count=result.count, page=result.page, limit=result.limit, pages=result.pages
        ),
    )


@_statistics.get(
    "/api/statistics",
    response_model=StatisticsResponse,
    summary="Average prices and volume over a period",
    responses={
        400: {
            "model": StatisticsError,
            "description": "A parameter is missing or invalid, or start_date is after end_date.",
        },
        404: {
            "model": StatisticsError,
            "description": "No price is stored for the symbol (in the period).",
        },
    },
)
async def statistics(
    session: SessionDep,
    start_date: Annotated[
        IsoDate, Query(description=f"First day. {_DATE_HELP}", examples=["2023-01-01"])
    ],
    end_date: Annotated[
        IsoDate, Query(description=f"Last day. {_DATE_HELP}", examples=["2023-01-31"])
    ],
    symbol: Annotated[
        str, Query(pattern=SYMBOL_PATTERN, description="The symbol.", examples=["IBM"])
    ],
) -> StatisticsResponse:
    """Average daily open and close price (2 decimals) and volume (integer) over the period."""
    result = await service.statistics(
        session, symbol=symbol.upper(), start=start_date, end=end_date
    )
    return StatisticsResponse(
        data=Statistics(
            start_date=result.start_date,
            end_date=result.end_date,
            symbol=result.symbol,
            average_daily_open_price=float(result.average_open),
            average_daily_close_price=float(result.average_close),
            average_daily_volume=result.average_volume,
        )
    )


@router.get(
    "/api/financial_data/chart.svg",
    tags=["market"],
    response_class=SvgResponse,
    summary="Chart of closing prices (SVG)",
    responses={
        200: {
            "description": "An SVG line chart.",
            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
        },
        **problem_responses(400, 404),
    },
)
async def close_price_chart(
    session: SessionDep,
    symbol: Annotated[
        str, Query(pattern=SYMBOL_PATTERN, description="The symbol.", examples=["IBM"])
    ],
    start_date: Annotated[
        OptionalIsoDate, Query(description=f"First day. {_DATE_HELP}", examples=["2023-01-01"])
    ] = None,
    end_date: Annotated[
        OptionalIsoDate, Query(description=f"Last day. {_DATE_HELP}", examples=["2023-01-31"])
    ] = None,
) -> SvgResponse:
    """A small line chart of the symbol's closing prices over the period, rendered server-side."""
    points = await service.close_prices(
        session, symbol=symbol.upper(), start=start_date, end=end_date
    )
    return SvgResponse(
        render_close_chart(symbol.upper(), points),
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        },
    )


router.include_router(_financial)
router.include_router(_statistics)
