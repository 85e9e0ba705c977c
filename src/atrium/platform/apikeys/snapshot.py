"""An in-process copy of every key record, so that checking a key costs no round trip.

Both stores keep one: the SQL store serves every lookup from it, the Redis store falls back to
it while Redis is unreachable. The copy is replaced as a whole by ``load`` (one query or one
``HGETALL``: the key table is small), in the background once it is older than ``period``, so
a request never waits for a periodic reload.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from atrium.platform.apikeys.model import ApiKey

log = logging.getLogger("atrium.apikeys")

Loader = Callable[[], Awaitable[dict[str, ApiKey]]]


class KeySnapshot:
    """Records by key hash, reloaded whole by ``load``."""

    def __init__(self, load: Loader, period: float) -> None:
        self._load = load
        self.period = period
        self.records: dict[str, ApiKey] = {}
        self.loaded_at = -math.inf  # monotonic time of the last successful load
        self._attempted_at = -math.inf
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    def get(self, key_hash: str) -> ApiKey | None:
        """The record of a key hash, if the copy has it."""
        return self.records.get(key_hash)

    def put(self, key_hash: str, record: ApiKey) -> None:
        """Record a change this process made (or learnt) before the next load shows it."""
        self.records[key_hash] = record

    @property
    def age(self) -> float:
        """Seconds since the last successful load."""
        return time.monotonic() - self.loaded_at

    async def reload(self, *, unless_within: float | None = None) -> None:
        """Load the copy now; skip when a load finished ``unless_within`` seconds before."""
        started = time.monotonic()
        async with self._lock:
            if unless_within is not None and self.loaded_at >= started - unless_within:
                return
            self._attempted_at = time.monotonic()
            records = await self._load()
            self.records = records
            self.loaded_at = time.monotonic()

    def refresh_if_stale(self) -> None:
        """Start a background reload when the copy is older than ``period`` (one try a period)."""
        now = time.monotonic()
        if now - self._attempted_at < self.period:
            return
        if self._background is None or self._background.done():
            self._attempted_at = now  # one attempt per period, even if it fails
            self._background = asyncio.get_running_loop().create_task(self.quiet_reload())

    async def quiet_reload(self) -> None:
        """:meth:`reload`, logging instead of raising (a failed reload keeps the old copy)."""
        try:
            await self.reload()
        except Exception as exc:
            log.warning("api-key reload failed: %s", type(exc).__name__)

    def clear(self) -> None:
        """Forget the copy (the next lookup loads again)."""
        self.records = {}
        self.loaded_at = -math.inf
        self._attempted_at = -math.inf
