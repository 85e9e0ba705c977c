"""The per-request Lua scripts, sent as redis-py pipelines: one per event-loop iteration.

Every keyed request runs one script (key check, rate limit, cached read). Sent one by one
through redis-py's client API, each call checks a connection out of the pool and back and
passes its retry and argument-checking layers. Here the calls of one event-loop iteration (the
requests being served at the same moment) go out together as one redis-py pipeline without
``MULTI`` — one write, one round trip, one pool checkout for the lot — and each caller gets
its own reply. Everything else is redis-py's: the connection (TCP, TLS for ``rediss://``, a
Unix socket for ``unix://``), authentication, database selection, packing, parsing (hiredis'
C parser when installed), timeouts and its one retry on a dropped connection.

Atrium had its own RESP client for this; ``bench/redis_clients.py`` measured it against
redis-py (three ways), coredis and valkey-glide on the same hot path, end to end, and it was
not more than 15 % faster than the libraries (docs: Performance → Redis client), so it went.

Errors: an error reply fails its own call only (:class:`ScriptError`); a connection that fails
or times out fails every call of its pipeline (:class:`RedisUnavailable`), which callers treat
like any other Redis outage.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.exceptions import NoScriptError, ResponseError


class RedisUnavailable(ConnectionError):
    """The connection failed, closed or timed out."""


class ScriptError(Exception):
    """Redis answered the script with an error."""


class Script:
    """A Lua script and its SHA-1 (what EVALSHA names it by)."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_Call = tuple[Script, list[Any], list[Any], "asyncio.Future[Any]"]


class PipelinedScripts:
    """Runs :class:`Script` objects; the calls of one loop iteration share a pipeline."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._batch: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA, or EVAL when Redis does not know the script (e.g. after a restart)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._send)
        self._batch.append((script, keys, args, future))
        return await future

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._sending.add(task)  # a reference until done (the loop keeps only weak ones)
        task.add_done_callback(self._sending.discard)

    async def _execute(self, batch: list[_Call]) -> None:
        try:
            replies = await self._pipeline(
                [
                    ("EVALSHA", script.sha, len(keys), *keys, *args)
                    for script, keys, args, _ in batch
                ]
            )
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:  # sent in full once; Redis then knows it by its SHA again
                retried = await self._pipeline(
                    [
                        ("EVAL", batch[i][0].text, len(batch[i][1]), *batch[i][1], *batch[i][2])
                        for i in missing
                    ]
                )
                for i, reply in zip(missing, retried, strict=True):
                    replies[i] = reply
        except Exception as exc:  # connection refused, lost or timed out
            error = RedisUnavailable(f"redis call failed: {exc!r}")
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller gave up
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(ScriptError(str(reply)))
            else:
                future.set_result(reply)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

    async def close(self) -> None:
        """Wait for the pipelines in flight (the client's pool owns the connections)."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
