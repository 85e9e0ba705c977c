"""Errors of the market domain's read API.

They are :class:`AtriumError` subclasses, so anywhere outside the two contract endpoints (the
chart) they render as problem+json; the contract endpoints turn them into their own envelope.
"""

from __future__ import annotations

from typing import Any

from atrium.platform.errors import AtriumError


class MarketQueryError(AtriumError):
    """A request the market API cannot answer as asked (bad parameter, start after end...)."""

    status, slug, title = 400, "invalid-market-query", "Invalid market query"


class UnknownSymbolError(MarketQueryError):
    """No price of this symbol is stored at all."""

    status, slug, title = 404, "unknown-symbol", "Unknown symbol"


class NoPricesError(MarketQueryError):
    """The symbol is known but has no price in the requested range."""

    status, slug, title = 404, "no-prices", "No prices in range"


class PageOutOfRange(MarketQueryError):
    """``page`` lies beyond the last page; carries the real pagination so clients can recover."""

    status, slug, title = 404, "page-out-of-range", "Page out of range"

    def __init__(self, detail: str, *, pagination: dict[str, Any]) -> None:
        super().__init__(detail, pagination=pagination)
        self.pagination = pagination
