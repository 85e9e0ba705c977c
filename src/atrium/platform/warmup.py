"""What a worker does once started, so that its first seconds and its long run stay smooth.

* :func:`open_pool` opens the database pool's connections as the worker starts, so that they
  are there when traffic arrives: otherwise the first concurrent requests each wait for a
  connection to be made (TCP, TLS negotiation, authentication), which is what a cold start's
  tail was made of.
* :func:`freeze_heap` moves every object alive after start-up (modules, classes, routes,
  compiled SQL, settings: ~150,000 objects) out of the garbage collector's reach. Without it,
  each full collection walks them all again, a pause of tens of milliseconds that lands on
  whichever requests are in flight (issue 13's p99 of ten times the median). Objects made
  later are still collected as usual; the young generation's threshold is raised so the
  collector runs every few dozen requests rather than every few. There is no collection
  first: a full one costs as much as the pauses it would save (0.2-0.7 s here) and delays
  the first requests, for the few kilobytes of start-up garbage it would free. Once per
  process: an app started again in the same process (tests) leaves the heap as it is.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("atrium.warmup")

# Allocations (net of frees) between young-generation collections; CPython's default is 700.
GC_YOUNG_THRESHOLD = 10_000


async def open_pool(engine: AsyncEngine, connections: int) -> None:
    """Open up to ``connections`` pooled connections at once (failures are not fatal here)."""
    if engine.dialect.name == "sqlite" or connections < 1:
        return
    async with AsyncExitStack() as stack:
        try:
            await asyncio.gather(
                *(stack.enter_async_context(engine.connect()) for _ in range(connections))
            )
        except Exception as exc:
            # /readyz reports the database; requests will connect (or fail) on their own.
            log.warning("could not open the database pool at start-up: %s", type(exc).__name__)


_frozen = False


def freeze_heap() -> None:
    """Keep every object alive now out of every later garbage collection."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
