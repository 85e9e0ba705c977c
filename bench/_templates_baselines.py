"""The two baselines of ``bench/templates.py``: the same SELECT served the common ways.

* :func:`asyncpg_app` — a minimal FastAPI endpoint on an asyncpg pool (one query per request,
  serialised with orjson: a strong baseline, not a strawman).
* :func:`orm_app` — the usual tutorial shape: a sync ``def`` endpoint, a SQLAlchemy ORM session
  per request from a dependency, ``session.query(...).first()``, a Pydantic response model.

Both read ``BENCH_DSN`` (a plain ``postgresql://`` URL) and serve
``GET /templates/{templateid}`` with the same JSON object as Atrium.
"""

# No ``from __future__ import annotations``: FastAPI must see the dependency annotations of the
# endpoints defined inside the factories as objects, not as strings naming local variables.
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

SELECT = (
    "SELECT tidx, templateid, name, description, content, created, modified "
    "FROM templates WHERE templateid = $1"
)


def asyncpg_app() -> FastAPI:
    """FastAPI + asyncpg, nothing else."""
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
        row = await state["pool"].fetchrow(SELECT, templateid)
        if row is None:
            raise HTTPException(404)
        data = dict(row)
        data["templateid"] = str(data["templateid"])
        return Response(orjson.dumps(data, option=orjson.OPT_UTC_Z), media_type="application/json")

    return app


class TemplateOut(BaseModel):
    """The response model of the ORM version."""

    model_config = ConfigDict(from_attributes=True)

    tidx: int
    templateid: uuid.UUID
    name: str
    description: str
    content: str
    created: datetime
    modified: datetime


def orm_app() -> FastAPI:
    """FastAPI + sync SQLAlchemy ORM (psycopg 3), as most tutorials write it."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from atrium.templates.models import Template

    dsn = os.environ["BENCH_DSN"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(dsn, pool_size=10, max_overflow=10)
    make_session = sessionmaker(engine)

    def get_db() -> Iterator[Session]:
        with make_session() as session:
            yield session

    app = FastAPI()

    @app.get("/templates/{templateid}", response_model=TemplateOut)
    def get_template(templateid: uuid.UUID, db: Annotated[Session, Depends(get_db)]) -> Template:
        template = db.query(Template).filter(Template.templateid == templateid).first()
        if template is None:
            raise HTTPException(404)
        return template

    return app
