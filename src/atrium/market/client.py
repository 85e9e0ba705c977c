"""AlphaVantage over httpx: one ``TIME_SERIES_DAILY`` call per symbol, retried where it can help.

What the real API does, and what we make of it:

* HTTP 200 with ``Time Series (Daily)``: the data.
* HTTP 200 with ``Error Message``: the symbol (or the call) is invalid. Retrying cannot help.
* HTTP 200 with ``Note`` / ``Information``: a rate limit (per minute or per second: retried
  with backoff; per day: not, it lasts until midnight), an invalid key or a premium-only
  function (not retried).
* Timeouts, connection errors, 429 and 5xx: retried with exponential backoff and jitter.

The API key travels in the query string (AlphaVantage accepts it nowhere else), so it is in
every URL httpx logs or puts into an exception. It is masked in all of them: the ``httpx``
logger gets a redacting filter while a client is open, and every error message we raise is
built without the URL and scrubbed again on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx

log = logging.getLogger("atrium.market.alphavantage")

MASK = "***"
_APIKEY_IN_TEXT = re.compile(r"(apikey=)[^&\s\"']+", re.IGNORECASE)


class AlphaVantageError(Exception):
    """A failed fetch: ``outcome`` is its metric label, ``retryable`` whether a retry may help."""

    outcome: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __init__(self, symbol: str, message: str) -> None:
        super().__init__(f"{symbol}: {message}")
        self.symbol = symbol
        self.message = message


class UnknownSymbol(AlphaVantageError):
    """AlphaVantage answered ``Error Message``: it does not know the symbol."""

    outcome = "bad_symbol"


class InvalidApiKey(AlphaVantageError):
    """The key is missing, invalid, or not entitled to the function."""

    outcome = "invalid_key"


class RateLimited(AlphaVantageError):
    """A ``Note`` / ``Information`` rate-limit answer that outlasted our retries."""

    outcome = "rate_limited"
    retryable = True


class DailyLimitReached(RateLimited):
    """The per-day quota is used up: waiting seconds cannot help."""

    retryable = False


class Unavailable(AlphaVantageError):
    """Timeouts, connection failures, 429 or 5xx that outlasted our retries."""

    outcome = "unavailable"
    retryable = True


class BadResponse(AlphaVantageError):
    """A 200 whose body is not a daily time series we understand."""

    outcome = "bad_response"


def mask_secret(text: str, secret: str | None) -> str:
    """``text`` with the key (and any ``apikey=`` query value) replaced by ``***``."""
    if secret:
        text = text.replace(secret, MASK)
    return _APIKEY_IN_TEXT.sub(rf"\g<1>{MASK}", text)


class _RedactSecret(logging.Filter):
    """Rewrites records of a library logger (httpx logs full URLs) so the key never leaves."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secret(message, self.secret)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_LIBRARY_LOGGERS = ("httpx", "httpcore")


def classify_notice(symbol: str, text: str) -> AlphaVantageError:
    """Turn a ``Note`` / ``Information`` text into the right error (texts vary over the years)."""
    lowered = text.lower()
    if "invalid or missing" in lowered or "invalid api key" in lowered:
        return InvalidApiKey(symbol, "AlphaVantage rejected the API key: " + text)
    short_window = any(
        word in lowered for word in ("per minute", "per second", "frequency", "sparingly", "burst")
    )
    if short_window:
        return RateLimited(symbol, "AlphaVantage rate limit: " + text)
    if "per day" in lowered or "daily" in lowered:
        return DailyLimitReached(symbol, "AlphaVantage daily request quota used up: " + text)
    if "premium" in lowered:
        return InvalidApiKey(symbol, "the function needs a premium AlphaVantage plan: " + text)
    return RateLimited(symbol, "AlphaVantage rate limit: " + text)


class AlphaVantageClient:
    """Async client for ``TIME_SERIES_DAILY``; use as ``async with AlphaVantageClient(...)``."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str = "https://www.alphavantage.co/query",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("an AlphaVantage API key is required")
        self._api_key = api_key
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": "atrium-market-sync"},
            follow_redirects=False,
        )
        self._filter = _RedactSecret(api_key)

    async def __aenter__(self) -> Self:
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    def mask(self, text: str) -> str:
        """``text`` without this client's key."""
        return mask_secret(text, self._api_key)

    def _delay(self, attempt: int) -> float:
        # Exponential with "equal jitter": at least half the step, so retries really back off,
        # and spread so several syncs hitting one limit do not come back in lockstep.
        step = self.backoff * 2.0**attempt
        return step / 2 + random.uniform(0, step / 2)

    async def daily(self, symbol: str, *, outputsize: str = "compact") -> dict[str, Any]:
        """The raw ``TIME_SERIES_DAILY`` document of ``symbol`` (retried, errors classified)."""
        attempt = 0
        while True:
            try:
                return await self._daily_once(symbol, outputsize)
            except AlphaVantageError as exc:
                failure = exc
            if not failure.retryable or attempt >= self.retries:
                raise type(failure)(symbol, self.mask(failure.message)) from None
            delay = self._delay(attempt)
            attempt += 1
            log.warning(
                "alphavantage retry",
                extra={
                    "symbol": symbol,
                    "attempt": attempt,
                    "of": self.retries,
                    "reason": self.mask(failure.message),
                    "delay_s": round(delay, 3),
                },
            )
            await asyncio.sleep(delay)

    async def _daily_once(self, symbol: str, outputsize: str) -> dict[str, Any]:
        params = {
            "function": "TIME_SERIES_DAILY",
            "symbol": symbol,
            "outputsize": outputsize,
            "apikey": self._api_key,
        }
        try:
            response = await self._http.get(self.url, params=params)
        except httpx.TimeoutException:
            raise Unavailable(symbol, "AlphaVantage did not answer in time") from None
        except httpx.TransportError as exc:
            # The exception text may carry the URL (and so the key): keep only its kind.
            raise Unavailable(symbol, f"cannot reach AlphaVantage ({type(exc).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise Unavailable(symbol, f"AlphaVantage answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise BadResponse(symbol, f"AlphaVantage answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            # An outage page instead of JSON: worth another try.
            raise Unavailable(
                symbol, "AlphaVantage answered with something that is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise BadResponse(symbol, "AlphaVantage answered with JSON that is not an object")
        if "Error Message" in body:
            text = str(body["Error Message"])
            if "apikey" in text.lower():
                raise InvalidApiKey(symbol, "AlphaVantage rejected the API key: " + text)
            raise UnknownSymbol(symbol, "AlphaVantage does not know this symbol: " + text)
        for field in ("Note", "Information"):
            if field in body and not any(key.startswith("Time Series") for key in body):
                raise classify_notice(symbol, str(body[field]))
        return body
