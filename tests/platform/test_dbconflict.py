"""A database refusing a write because of a concurrent request is answered with the truth.

Each case is produced for real, with two transactions on two connections: the routes below
(added to an app of their own) do what a careless service could do, and the platform must
answer 404 / 409 / 503 problem documents, never 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.app import create_app
from atrium.hr.models import Department
from atrium.platform.db import SessionDep
from atrium.settings import Settings

PROBLEM = "https://atrium.dev/problems/"


@pytest.fixture
async def racing_app(clean: FastAPI, settings: Settings) -> AsyncIterator[FastAPI]:
    """An app with routes that write departments 1 and 2, pausing where a test says."""
    app = create_app(settings)
    app.state.paused = asyncio.Event()
    app.state.resume = asyncio.Event()
    app.state.barrier = asyncio.Barrier(2)

    async def rename_loaded(session: SessionDep) -> dict[str, str]:
        # Load, let the test delete the row, then change the loaded object: the unit of
        # work's UPDATE matches nothing (StaleDataError).
        department = await session.get(Department, 1)
        assert department is not None
        app.state.paused.set()
        await app.state.resume.wait()
        department.department = "Renamed"
        await session.flush()
        return {"ok": "yes"}

    async def touch_both(first: int, session: SessionDep) -> dict[str, str]:
        # Two of these in opposite orders: each holds one row and wants the other's.
        second = 3 - first
        await session.execute(update(Department).where(Department.id == first).values(id=first))
        await app.state.barrier.wait()
        await session.execute(update(Department).where(Department.id == second).values(id=second))
        return {"ok": "yes"}

    async def touch_impatiently(session: SessionDep) -> dict[str, str]:
        # Give up on a lock soon (SQLite's busy timeout, PostgreSQL's lock_timeout, InnoDB's
        # lock wait timeout, whose unit is a second; this app's engine is disposed after).
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            await session.execute(text("PRAGMA busy_timeout = 100"))
        elif dialect == "mysql":
            await session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
        else:
            await session.execute(text("SET LOCAL lock_timeout = '100ms'"))
        await session.execute(update(Department).where(Department.id == 1).values(id=1))
        return {"ok": "yes"}

    app.add_api_route("/race/rename-loaded", rename_loaded, methods=["POST"])
    app.add_api_route("/race/touch-both", touch_both, methods=["POST"])
    app.add_api_route("/race/touch-impatiently", touch_impatiently, methods=["POST"])
    async with app.router.lifespan_context(app):
        engine: AsyncEngine = app.state.engine
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO departments (id, department) VALUES (1, 'One'), (2, 'Two')")
            )
        yield app


def _client(app: FastAPI, key: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-API-KEY": key})


async def test_a_row_deleted_under_the_unit_of_work_is_404(
    racing_app: FastAPI, admin_api_key: str
) -> None:
    engine: AsyncEngine = racing_app.state.engine
    async with _client(racing_app, admin_api_key) as client:
        request = asyncio.create_task(client.post("/race/rename-loaded"))
        await racing_app.state.paused.wait()
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM departments WHERE id = 1"))
        racing_app.state.resume.set()
        response = await request
    assert response.status_code == 404, response.text
    assert response.json()["type"] == PROBLEM + "not-found"
    assert "deleted by another request" in response.json()["detail"]


@pytest.mark.postgres
async def test_a_deadlock_victim_is_409_and_the_other_succeeds(
    racing_app: FastAPI, admin_api_key: str
) -> None:
    async with _client(racing_app, admin_api_key) as client:
        answers = await asyncio.gather(
            client.post("/race/touch-both", params={"first": 1}),
            client.post("/race/touch-both", params={"first": 2}),
        )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["type"] == PROBLEM + "concurrent-update"
    assert refused.headers["retry-after"] == "1"


async def test_a_lock_wait_that_gives_up_is_503_with_retry_after(
    racing_app: FastAPI, admin_api_key: str
) -> None:
    engine: AsyncEngine = racing_app.state.engine
    async with engine.connect() as holder:
        # Another transaction holds the row (SQLite: the whole database) and keeps it.
        await holder.execute(update(Department).where(Department.id == 1).values(id=1))
        async with _client(racing_app, admin_api_key) as client:
            response = await client.post("/race/touch-impatiently")
        await holder.rollback()
    assert response.status_code == 503, response.text
    assert response.json()["type"] == PROBLEM + "database-busy"
    assert response.headers["retry-after"] == "1"
