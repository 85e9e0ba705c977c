"""An in-process copy of every key record, so that checking a key costs no round trip.

Both stores keep one: the SQL store serves every lookup from it, the Redis store falls back to
it while Redis is unreachable. The copy is replaced as a whole by ``load`` (one query or one
``HGETALL``: the key table is small), in the background once it is older than ``period``, so
a request never waits for a periodic reload. :class:`MissResolver` asks the store about keys
the copy does not have, without letting unknown keys hammer it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import OrderedDict
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


Fetch = Callable[[list[str]], Awaitable[dict[str, ApiKey]]]


class MissResolver:
    """Looks up, in the store itself, the keys a snapshot does not know (yet).

    A key created a moment ago by another process works on its first request this way, instead
    of being refused until the next reload. So that unknown keys cannot hammer the store:

    * one query at a time per process: the hashes that miss while it runs wait together and go
      in the next query (up to ``batch`` per query), so a flood of random keys costs one query
      in flight, never one per request;
    * a hash found absent is remembered for ``absent_seconds`` (at most ``max_absent`` of
      them, oldest forgotten first), so a client retrying a bad key costs nothing. A real key
      is random, so nobody presents it before it exists; :meth:`forget` (called whenever this
      process sees the table change) clears the list anyway.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        absent_seconds: float = 5.0,
        max_absent: int = 10_000,
        batch: int = 500,
    ) -> None:
        self._fetch = fetch
        self.absent_seconds = absent_seconds
        self.max_absent = max_absent
        self.batch = batch
        self._absent: OrderedDict[str, float] = OrderedDict()  # hash -> when to ask again
        self._waiting: dict[str, asyncio.Future[ApiKey | None]] = {}
        self._worker: asyncio.Task[None] | None = None

    async def resolve(self, key_hash: str) -> ApiKey | None:
        """The record the store holds for ``key_hash`` (``None``: absent, or store unreachable)."""
        retry_at = self._absent.get(key_hash)
        if retry_at is not None:
            if retry_at > time.monotonic():
                return None
            del self._absent[key_hash]
        future = self._waiting.get(key_hash)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._waiting[key_hash] = loop.create_future()
            if self._worker is None or self._worker.done():
                self._worker = loop.create_task(self._drain())
        # shield: a caller that goes away must not cancel the answer the others wait for
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._waiting:
            hashes = list(itertools.islice(self._waiting, self.batch))
            futures = [self._waiting.pop(h) for h in hashes]
            try:
                found = await self._fetch(hashes)
            except Exception as exc:
                # Unconfirmed keys are refused, and not remembered as absent.
                log.warning("api-key look-up failed: %s", type(exc).__name__)
                found = {}
            else:
                retry_at = time.monotonic() + self.absent_seconds
                for key_hash in hashes:
                    if key_hash not in found:
                        self._remember_absent(key_hash, retry_at)
            for key_hash, future in zip(hashes, futures, strict=True):
                if not future.done():
                    future.set_result(found.get(key_hash))

    def _remember_absent(self, key_hash: str, retry_at: float) -> None:
        self._absent[key_hash] = retry_at
        self._absent.move_to_end(key_hash)
        while len(self._absent) > self.max_absent:
            self._absent.popitem(last=False)

    def forget(self) -> None:
        """Drop the list of absent hashes (the table changed)."""
        self._absent.clear()
