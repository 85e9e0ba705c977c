"""Foreign keys hold under concurrent writers, however the loader checks them.

On PostgreSQL the CSV loader and clean batches check every referenced department and job
once for the whole load and lock them (``FOR KEY SHARE``), and skip the per-row foreign-key
triggers where the role may (the superuser these tests run as may). Each test runs twice:
as that superuser, and as a plain role that may not, where the triggers run as well. Both
must give the same answers, and no dangling reference may ever be committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from atrium.hr import ingest
from atrium.hr.bulk import loader_for
from atrium.hr.bulk.postgres import PostgresLoader
from atrium.hr.errors import ReferenceGone
from atrium.hr.rows import TABLES
from atrium.hr.summary import IngestResult
from atrium.platform.db import create_sessionmaker
from atrium.settings import to_async_url
from tests.conftest import RUN_ID

pytestmark = pytest.mark.postgres

T = "2021-01-01T00:00:00Z"
EMPLOYEES = TABLES["hired_employees"]


def _asyncpg_url(database_url: str, user: str | None = None) -> str:
    url = make_url(database_url)
    if user:
        url = url.set(username=user)
    return url.render_as_string(hide_password=False).replace("postgresql+asyncpg", "postgresql")


@pytest.fixture(params=["triggers skipped", "triggers fire"])
async def engine_as(
    request: pytest.FixtureRequest, clean: FastAPI, database_url: str
) -> AsyncIterator[AsyncEngine]:
    """An engine as the superuser (may skip the triggers), or as a plain role (may not);
    departments 1-3 and jobs 1-2 stored."""
    admin = await asyncpg.connect(_asyncpg_url(database_url))
    role = f"atrium_hr_plain_{RUN_ID}"
    user = None
    try:
        await admin.execute(
            "INSERT INTO departments VALUES (1, 'A'), (2, 'B'), (3, 'C');"
            "INSERT INTO jobs VALUES (1, 'X'), (2, 'Y')"
        )
        if request.param == "triggers fire":
            await admin.execute(
                f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; "
                f"GRANT USAGE ON SCHEMA public TO {role}; "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
            )
            user = role
        engine = create_async_engine(to_async_url(_asyncpg_url(database_url, user)))
        try:
            yield engine
            loader = loader_for(engine)
            assert isinstance(loader, PostgresLoader)
            assert loader.may_skip_triggers is (user is None)  # as the test ran it
            dangling = await admin.fetchval(
                "SELECT count(*) FROM hired_employees h WHERE NOT EXISTS (SELECT 1 FROM "
                "departments d WHERE d.id = h.department_id) OR NOT EXISTS (SELECT 1 FROM "
                "jobs j WHERE j.id = h.job_id)"
            )
            assert dangling == 0
        finally:
            await engine.dispose()
    finally:
        if user:
            await admin.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await admin.close()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _load(engine: AsyncEngine, data: bytes) -> IngestResult:
    async with create_sessionmaker(engine)() as session:
        result = await ingest.ingest_csv(session, EMPLOYEES, _chunks(data))
        await session.commit()
    return result


async def _wait_for_a_lock_wait(admin: Any) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if await admin.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE NOT l.granted AND a.datname = current_database()"
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the load never waited for the deleting transaction")


async def test_rows_naming_missing_departments_or_jobs_are_rejected(
    engine_as: AsyncEngine,
) -> None:
    data = f"1,A,{T},1,1\n2,B,{T},4,1\n3,C,{T},1,3\n4,D,{T},3,2\n".encode()
    result = await _load(engine_as, data)
    assert (result.inserted, [(r.index, r.errors) for r in result.rejected]) == (
        2,
        [(1, ["department_id 4 does not exist"]), (2, ["job_id 3 does not exist"])],
    )
    maker = create_sessionmaker(engine_as)
    async with maker() as session:
        batch = [
            {"id": 10, "name": "E", "datetime": T, "department_id": 9, "job_id": 1},
            {"id": 11, "name": "F", "datetime": T, "department_id": 2, "job_id": 2},
        ]
        summary = await ingest.ingest_batch(session, EMPLOYEES, batch, body=_json(batch))
        await session.commit()
    assert (summary.inserted, [(r.index, r.errors) for r in summary.rejected]) == (
        1,
        [(0, ["department_id 9 does not exist"])],
    )


def _json(rows: list[dict[str, Any]]) -> bytes:
    import orjson

    return orjson.dumps(rows)


async def test_a_department_deleted_during_a_load_fails_it_and_a_retry_rejects_its_rows(
    engine_as: AsyncEngine, database_url: str
) -> None:
    deleter = await asyncpg.connect(_asyncpg_url(database_url))
    admin = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        await deleter.execute("BEGIN; DELETE FROM departments WHERE id = 3")
        data = f"1,A,{T},1,1\n2,B,{T},3,1\n".encode()
        load = asyncio.ensure_future(_load(engine_as, data))
        await _wait_for_a_lock_wait(admin)  # the load waits for the delete to end
        await deleter.execute("COMMIT")
        with pytest.raises(ReferenceGone):
            await load
        assert await admin.fetchval("SELECT count(*) FROM hired_employees") == 0
        retry = await _load(engine_as, data)
        assert [(r.index, r.errors) for r in retry.rejected] == [
            (1, ["department_id 3 does not exist"])
        ]
    finally:
        await deleter.close()
        await admin.close()


async def test_a_delete_rolled_back_during_a_load_lets_it_through(
    engine_as: AsyncEngine, database_url: str
) -> None:
    deleter = await asyncpg.connect(_asyncpg_url(database_url))
    admin = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        await deleter.execute("BEGIN; DELETE FROM jobs WHERE id = 2")
        load = asyncio.ensure_future(_load(engine_as, f"1,A,{T},1,2\n".encode()))
        await _wait_for_a_lock_wait(admin)
        await deleter.execute("ROLLBACK")
        result: IngestResult = await load
        assert (result.inserted, result.rejected) == (1, [])
    finally:
        await deleter.close()
        await admin.close()


async def test_a_delete_after_the_load_waits_for_its_commit_then_fails(
    engine_as: AsyncEngine, database_url: str
) -> None:
    deleter = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        async with create_sessionmaker(engine_as)() as session:
            data = f"1,A,{T},3,2\n".encode()
            result = await ingest.ingest_csv(session, EMPLOYEES, _chunks(data))
            assert result.inserted == 1
            await deleter.execute("SET lock_timeout = '300ms'")
            for table in ("departments WHERE id = 3", "jobs WHERE id = 2"):
                with pytest.raises(asyncpg.LockNotAvailableError):  # held by the open load
                    await deleter.execute(f"DELETE FROM {table}")
            await session.commit()
        for table in ("departments WHERE id = 3", "jobs WHERE id = 2"):
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await deleter.execute(f"DELETE FROM {table}")
    finally:
        await deleter.close()


async def test_a_department_deleted_during_a_batch_rejects_its_rows(
    engine_as: AsyncEngine, database_url: str
) -> None:
    deleter = await asyncpg.connect(_asyncpg_url(database_url))
    admin = await asyncpg.connect(_asyncpg_url(database_url))
    batch = [
        {"id": 1, "name": "A", "datetime": T, "department_id": 1, "job_id": 1},
        {"id": 2, "name": "B", "datetime": T, "department_id": 3, "job_id": 1},
    ]
    maker = create_sessionmaker(engine_as)
    try:
        await deleter.execute("BEGIN; DELETE FROM departments WHERE id = 3")
        async with maker() as session:
            store = asyncio.ensure_future(
                ingest.ingest_batch(session, EMPLOYEES, batch, body=_json(batch))
            )
            await _wait_for_a_lock_wait(admin)
            await deleter.execute("COMMIT")
            summary = await store
            await session.commit()
        assert (summary.inserted, [(r.index, r.errors) for r in summary.rejected]) == (
            1,
            [(1, ["department_id 3 does not exist"])],
        )
    finally:
        await deleter.close()
        await admin.close()
