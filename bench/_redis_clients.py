"""Atrium with its per-request Redis script served by another client (``bench/redis_clients.py``).

``create_app`` builds the app exactly as shipped; ``POST /__bench/redis-client/{name}`` then
hands the key store's and the limiter's script calls (the one Redis call of a cached
``GET /templates/{id}``) to the client ``name``:

* ``atrium`` — what the app ships (``atrium.platform.redis_scripts``: the calls of one
  event-loop iteration as one redis-py pipeline, redis-py's default parser);
* ``redis-py`` / ``redis-py+hiredis`` — ``EVALSHA`` through redis-py's connection pool, with
  its pure-Python parser or with hiredis' C parser;
* ``coredis`` and ``valkey-glide`` (``EVALSHA`` / ``invoke_script``) when they are installed.

Every variant sees the same scripts, keys and arguments and returns the same replies.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI

from atrium.app import create_app as create_atrium


def _str(value: str | bytes) -> str:
    # Scripts name their SHA and text as str or bytes, depending on the client that made them.
    return value if isinstance(value, str) else value.decode()


class _RedisPy:
    """EVALSHA through redis-py's pool (the parser chosen when the client is built)."""

    def __init__(self, url: str, hiredis: bool) -> None:
        from redis.asyncio import Redis

        kwargs: dict[str, Any] = {}
        if not hiredis:
            from redis._parsers import _AsyncRESP2Parser

            kwargs["parser_class"] = _AsyncRESP2Parser
        self.client: Any = Redis.from_url(url, **kwargs)

    async def run(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(_str(script.sha), len(keys), *keys, *args)
        except Exception as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            return await self.client.eval(_str(script.text), len(keys), *keys, *args)

    async def close(self) -> None:
        await self.client.aclose()


class _Coredis:
    def __init__(self, url: str) -> None:
        import coredis

        self.client: Any = coredis.Redis.from_url(url)
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        await self._stack.enter_async_context(self.client)

    async def run(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(_str(script.sha), keys=keys, args=args)
        except Exception as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            return await self.client.eval(_str(script.text), keys=keys, args=args)

    async def close(self) -> None:
        await self._stack.aclose()


class _Glide:
    def __init__(self, url: str) -> None:
        self.url = urlsplit(url)
        self.client: Any = None
        self._scripts: dict[bytes, Any] = {}

    async def start(self) -> None:
        from glide import GlideClient, GlideClientConfiguration, NodeAddress

        address = NodeAddress(self.url.hostname or "127.0.0.1", self.url.port or 6379)
        db = int((self.url.path or "/0").strip("/") or 0)
        self.client = await GlideClient.create(GlideClientConfiguration([address], database_id=db))

    async def run(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        from glide import Script

        glide_script = self._scripts.get(script.sha)
        if glide_script is None:
            glide_script = self._scripts[script.sha] = Script(script.text)
        return await self.client.invoke_script(
            glide_script, keys=[str(k) for k in keys], args=[str(a) for a in args]
        )

    async def close(self) -> None:
        await self.client.close()


def _runner(name: str, url: str) -> Any:
    if name == "redis-py":
        return _RedisPy(url, hiredis=False)
    if name == "redis-py+hiredis":
        return _RedisPy(url, hiredis=True)
    if name == "coredis":
        return _Coredis(url)
    if name == "valkey-glide":
        return _Glide(url)
    raise ValueError(f"unknown BENCH_REDIS_CLIENT {name!r}")


SWITCH = "/__bench/redis-client/"


class _Switchable:
    """The app, plus ``POST /__bench/redis-client/{name}``: hand the script calls to ``name``.

    One server serves every candidate in turn, so rounds interleave without restarts.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.runners: dict[str, Any] = {}
        self.own: Any = None

    async def switch(self, name: str) -> None:
        state = self.app.state
        if self.own is None:  # what the app built for itself
            self.own = state.limiter.fast
        runner = self.own
        if name != "atrium":
            runner = self.runners.get(name)
            if runner is None:
                runner = _runner(name, os.environ["ATRIUM_REDIS_URL"])
                if hasattr(runner, "start"):
                    await runner.start()
                self.runners[name] = runner
        state.api_keys.fast = state.limiter.fast = runner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(SWITCH):
            await self.switch(scope["path"][len(SWITCH) :])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def create_app() -> Any:
    """Atrium as shipped, its per-request script calls switchable between clients."""
    return _Switchable(create_atrium())
