"""The baseline of ``bench/http.py``: the same reads, served as simply as FastAPI can.

* :func:`asyncpg_app` — minimal FastAPI endpoints on an asyncpg pool (the queries Atrium runs on
  a cache miss, serialised with orjson, no key, no limiter, no cache, no log: a strong baseline,
  not a strawman) for ``GET /templates/{id}``, ``GET /users/{id}`` and
  ``GET /users/{id}/certificates``.

It reads ``BENCH_DSN`` (a plain ``postgresql://`` URL) and answers with the same JSON objects
as Atrium.
"""

# No ``from __future__ import annotations``: FastAPI must see the dependency annotations of the
# endpoints defined inside the factories as objects, not as strings naming local variables.
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Response

TEMPLATE = (
    "SELECT tidx, templateid, name, description, content, created, modified "
    "FROM templates WHERE templateid = $1"
)
USER = "SELECT id, name, email FROM users WHERE id = $1"
CERTIFICATES_COUNT = "SELECT count(*) FROM certificates WHERE user_id = $1"
CERTIFICATES_PAGE = (
    "SELECT id, active, body FROM certificates WHERE user_id = $1 ORDER BY id LIMIT $2 OFFSET $3"
)


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_UTC_Z), media_type="application/json")


def asyncpg_app() -> FastAPI:
    """FastAPI + asyncpg + orjson, nothing else (a pool as large as Atrium's)."""
    import asyncpg

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["pool"] = await asyncpg.create_pool(os.environ["BENCH_DSN"], min_size=10, max_size=10)
        yield
        await state["pool"].close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/templates/{templateid}")
    async def get_template(templateid: uuid.UUID) -> Response:
        row = await state["pool"].fetchrow(TEMPLATE, templateid)
        if row is None:
            raise HTTPException(404)
        data = dict(row)
        data["templateid"] = str(data["templateid"])
        return _json(data)

    @app.get("/users/{user_id}")
    async def get_user(user_id: int) -> Response:
        row = await state["pool"].fetchrow(USER, user_id)
        if row is None:
            raise HTTPException(404)
        return _json(dict(row))

    @app.get("/users/{user_id}/certificates")
    async def list_certificates(user_id: int, limit: int = 50, offset: int = 0) -> Response:
        async with state["pool"].acquire() as connection:
            total = await connection.fetchval(CERTIFICATES_COUNT, user_id)
            rows = await connection.fetch(CERTIFICATES_PAGE, user_id, limit, offset)
            if not total and await connection.fetchrow(USER, user_id) is None:
                raise HTTPException(404)
        items = [dict(r) for r in rows]
        return _json({"items": items, "total": total, "limit": limit, "offset": offset})

    return app
