"""Request parameters and response shapes of the market API (the clients' existing contract).

``open_price``, ``close_price`` and ``volume`` are JSON strings in ``/api/financial_data`` (as
the contract's examples show) while statistics are JSON numbers. Every response, error or not,
carries ``info.error``: empty on success, a clear message otherwise.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

MAX_LIMIT = 100
DEFAULT_LIMIT = 5
MAX_PAGE = 2**31 - 1
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,19}$"
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PRICE_QUANTUM = Decimal("0.0001")


def _strict_iso_date(value: object) -> object:
    # Pydantic alone would also take "1700000000" (a Unix time) for a date; the contract says
    # YYYY-MM-DD, so anything else is an error rather than a surprising day.
    if isinstance(value, str):
        if not _ISO_DATE.fullmatch(value):
            raise PydanticCustomError("date_format", "must be a date written YYYY-MM-DD")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("date_value", "is not a calendar date") from None
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_strict_iso_date)]
OptionalIsoDate = Annotated[dt.date | None, BeforeValidator(_strict_iso_date)]

_PARAMETER_RULES = {
    "start_date": "start_date must be a date written YYYY-MM-DD",
    "end_date": "end_date must be a date written YYYY-MM-DD",
    "symbol": "symbol must be 1 to 20 letters, digits, '.' or '-' (e.g. IBM)",
    "limit": f"limit must be an integer from 1 to {MAX_LIMIT}",
    "page": f"page must be an integer from 1 to {MAX_PAGE}",
}


def describe_errors(errors: Sequence[Any]) -> str:
    """One readable sentence for FastAPI's parameter validation errors."""
    messages: list[str] = []
    for error in errors:
        loc = error.get("loc") or ("request",)
        name = str(loc[-1])
        kind = error.get("type")
        if kind == "missing":
            message = f"{name} is required"
        elif kind == "date_value":
            message = f"{name} is not a calendar date"
        else:
            message = _PARAMETER_RULES.get(name, f"{name}: {error.get('msg', 'invalid')}")
        if message not in messages:
            messages.append(message)
    return "; ".join(messages) or "invalid request"


def format_price(value: Decimal) -> str:
    """A stored price as the contract writes it: at least 2 and at most 4 decimals."""
    text = format(value.quantize(_PRICE_QUANTUM), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


class Info(BaseModel):
    """Empty ``error`` on success."""

    error: Literal[""] = Field(default="", description="Empty when the request succeeded.")


class ErrorInfo(BaseModel):
    """What went wrong."""

    error: str = Field(
        min_length=1,
        description="A clear message saying what went wrong.",
        examples=["start_date must be a date written YYYY-MM-DD"],
    )


class Empty(BaseModel):
    """An empty object: the place of data that could not be produced."""

    model_config = ConfigDict(extra="forbid")


class PriceRecord(BaseModel):
    """One symbol's prices and volume on one trading day."""

    symbol: str = Field(examples=["IBM"])
    date: dt.date = Field(examples=["2023-01-05"])
    open_price: str = Field(
        pattern=r"^[0-9]+\.[0-9]{2,4}$",
        description="Decimal string, 2 to 4 decimals.",
        examples=["153.08"],
    )
    close_price: str = Field(
        pattern=r"^[0-9]+\.[0-9]{2,4}$",
        description="Decimal string, 2 to 4 decimals.",
        examples=["154.52"],
    )
    volume: str = Field(pattern=r"^[0-9]+$", description="Integer string.", examples=["62199013"])


class Pagination(BaseModel):
    """Where this page sits among all matching records."""

    count: int = Field(ge=0, description="Number of matching records.", examples=[20])
    page: int = Field(ge=1, description="This page (1-based).", examples=[2])
    limit: int = Field(ge=1, description="Records per page.", examples=[3])
    pages: int = Field(ge=0, description="Number of pages.", examples=[7])


class FinancialDataResponse(BaseModel):
    """A page of daily records ordered by date, then symbol."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [
                        {
                            "symbol": "IBM",
                            "date": "2023-01-05",
                            "open_price": "153.08",
                            "close_price": "154.52",
                            "volume": "62199013",
                        }
                    ],
                    "pagination": {"count": 20, "page": 2, "limit": 3, "pages": 7},
                    "info": {"error": ""},
                }
            ]
        }
    )

    data: list[PriceRecord]
    pagination: Pagination
    info: Info = Field(default_factory=Info)


class FinancialDataError(BaseModel):
    """The envelope with ``info.error`` set; ``pagination`` is real when the page is too far."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [],
                    "pagination": {"count": 20, "page": 8, "limit": 3, "pages": 7},
                    "info": {"error": "page 8 does not exist: there are 7 pages"},
                },
                {
                    "data": [],
                    "pagination": {},
                    "info": {"error": "start_date must be a date written YYYY-MM-DD"},
                },
            ]
        }
    )

    data: list[PriceRecord] = Field(default_factory=list, max_length=0)
    pagination: Pagination | Empty = Field(default_factory=Empty)
    info: ErrorInfo


class Statistics(BaseModel):
    """Averages over the period (prices to 2 decimals, volume to an integer)."""

    start_date: dt.date = Field(examples=["2023-01-01"])
    end_date: dt.date = Field(examples=["2023-01-31"])
    symbol: str = Field(examples=["IBM"])
    average_daily_open_price: float = Field(examples=[123.45])
    average_daily_close_price: float = Field(examples=[234.56])
    average_daily_volume: int = Field(examples=[1000000])


class StatisticsResponse(BaseModel):
    """Statistics of one symbol over a period."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": {
                        "start_date": "2023-01-01",
                        "end_date": "2023-01-31",
                        "symbol": "IBM",
                        "average_daily_open_price": 123.45,
                        "average_daily_close_price": 234.56,
                        "average_daily_volume": 1000000,
                    },
                    "info": {"error": ""},
                }
            ]
        }
    )

    data: Statistics
    info: Info = Field(default_factory=Info)


class StatisticsError(BaseModel):
    """The same envelope with empty ``data`` and ``info.error`` set."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"data": {}, "info": {"error": "no prices stored for symbol XYZ"}},
            ]
        }
    )

    data: Empty = Field(default_factory=Empty)
    info: ErrorInfo
