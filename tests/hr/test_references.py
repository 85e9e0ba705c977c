"""Foreign keys hold under concurrent writers, however the loader checks them.

The CSV loaders (and PostgreSQL's clean batches) check every referenced department and job
once for the whole load and lock them (``FOR KEY SHARE`` / ``LOCK IN SHARE MODE``, the locks
the engines' own per-row checks take), and skip the per-row checks where they may. On
PostgreSQL each test runs twice: as the superuser the suite connects as, which may skip the
triggers, and as a plain role, which may not (the triggers then run too). Every variant must
give the same answers, and no dangling reference may ever be committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from atrium.hr import ingest
from atrium.hr.bulk import loader_for
from atrium.hr.bulk.postgres import PostgresLoader
from atrium.hr.rows import TABLES
from atrium.hr.summary import IngestResult
from atrium.platform.db import create_engine, create_sessionmaker
from atrium.platform.dbconflict import contention
from atrium.settings import Settings
from tests.conftest import BACKEND, RUN_ID

pytestmark = pytest.mark.postgres  # the real servers: PostgreSQL or MariaDB

T = "2021-01-01T00:00:00Z"
EMPLOYEES = TABLES["hired_employees"]
VARIANTS = ["checks skipped", "checks fire"] if BACKEND == "postgresql" else ["checks skipped"]
DANGLING = (
    "SELECT count(*) FROM hired_employees h WHERE NOT EXISTS (SELECT 1 FROM departments d "
    "WHERE d.id = h.department_id) OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = h.job_id)"
)
# Transactions of this database waiting for a lock right now.
LOCK_WAITS = {
    "postgresql": "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
    "WHERE NOT l.granted AND a.datname = current_database()",
    "mysql": "SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN "
    "information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
    "WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()",
}


def _engine(settings: Settings, user: str | None = None) -> AsyncEngine:
    url = make_url(settings.database_url)
    if user:
        url = url.set(username=user, password=None)
    copy = settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
    return create_engine(copy)


@pytest.fixture
async def admin(clean: Any, settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine for the other side of each race; departments 1-3 and jobs 1-2 stored."""
    engine = _engine(settings)
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO departments VALUES (1, 'A'), (2, 'B'), (3, 'C')")
        )
        await connection.execute(text("INSERT INTO jobs VALUES (1, 'X'), (2, 'Y')"))
    try:
        yield engine
        async with engine.connect() as connection:
            assert (await connection.execute(text(DANGLING))).scalar_one() == 0
    finally:
        await engine.dispose()


@pytest.fixture(params=VARIANTS)
async def engine_as(
    request: pytest.FixtureRequest, admin: AsyncEngine, settings: Settings
) -> AsyncIterator[AsyncEngine]:
    """The loading side: the suite's role, or (PostgreSQL) a plain role that may not skip
    the foreign-key triggers."""
    role = f"atrium_hr_plain_{RUN_ID}"
    user = role if request.param == "checks fire" else None
    if user:
        async with admin.begin() as connection:
            for statement in (
                f"DROP ROLE IF EXISTS {role}",
                f"CREATE ROLE {role} LOGIN",
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            ):
                await connection.execute(text(statement))
    engine = _engine(settings, user)
    try:
        yield engine
        loader = loader_for(engine)
        if isinstance(loader, PostgresLoader):
            assert loader.may_skip_triggers is (user is None)  # as the test meant to run it
    finally:
        await engine.dispose()
        if user:
            async with admin.begin() as connection:
                await connection.execute(text(f"DROP OWNED BY {role}"))
                await connection.execute(text(f"DROP ROLE {role}"))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _load(engine: AsyncEngine, data: bytes) -> IngestResult:
    async with create_sessionmaker(engine)() as session:
        result = await ingest.ingest_csv(session, EMPLOYEES, _chunks(data))
        await session.commit()
    return result


async def _wait_for_a_lock_wait(admin: AsyncEngine) -> None:
    async with admin.connect() as connection:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (await connection.execute(text(LOCK_WAITS[BACKEND]))).scalar_one():
                return
            await connection.rollback()  # a fresh snapshot for the next look
            # MariaDB refreshes its INNODB_TRX view only when nobody read it for 0.1 s.
            await asyncio.sleep(0.25)
    raise AssertionError("the load never waited for the deleting transaction")


async def _deleting(admin: AsyncEngine, where: str) -> AsyncConnection:
    connection = await admin.connect()
    await connection.begin()
    await connection.execute(text(f"DELETE FROM {where}"))
    return connection


def _rejects(result: IngestResult) -> list[tuple[int, list[str]]]:
    return [(rejected.index, rejected.errors) for rejected in result.rejected]


async def test_rows_naming_missing_departments_or_jobs_are_rejected(
    engine_as: AsyncEngine,
) -> None:
    data = f"1,A,{T},1,1\n2,B,{T},4,1\n3,C,{T},1,3\n4,D,{T},3,2\n".encode()
    result = await _load(engine_as, data)
    assert (result.inserted, _rejects(result)) == (
        2,
        [(1, ["department_id 4 does not exist"]), (2, ["job_id 3 does not exist"])],
    )
    batch = [
        {"id": 10, "name": "E", "datetime": T, "department_id": 9, "job_id": 1},
        {"id": 11, "name": "F", "datetime": T, "department_id": 2, "job_id": 2},
    ]
    async with create_sessionmaker(engine_as)() as session:
        summary = await ingest.ingest_batch(session, EMPLOYEES, batch, body=orjson.dumps(batch))
        await session.commit()
    assert (summary.inserted, _rejects(summary)) == (1, [(0, ["department_id 9 does not exist"])])


async def test_a_department_deleted_during_a_load_rejects_its_rows(
    engine_as: AsyncEngine, admin: AsyncEngine
) -> None:
    deleter = await _deleting(admin, "departments WHERE id = 3")
    try:
        load = asyncio.ensure_future(_load(engine_as, f"1,A,{T},1,1\n2,B,{T},3,1\n".encode()))
        await _wait_for_a_lock_wait(admin)  # the load waits for the delete to end
        await deleter.commit()
        result = await load
    finally:
        await deleter.close()
    assert (result.inserted, _rejects(result)) == (1, [(1, ["department_id 3 does not exist"])])


async def test_a_delete_rolled_back_during_a_load_lets_it_through(
    engine_as: AsyncEngine, admin: AsyncEngine
) -> None:
    deleter = await _deleting(admin, "jobs WHERE id = 2")
    try:
        load = asyncio.ensure_future(_load(engine_as, f"1,A,{T},1,2\n".encode()))
        await _wait_for_a_lock_wait(admin)
        await deleter.rollback()
        result = await load
    finally:
        await deleter.close()
    assert (result.inserted, result.rejected) == (1, [])


async def test_a_delete_after_the_load_waits_for_its_commit_then_fails(
    engine_as: AsyncEngine, admin: AsyncEngine
) -> None:
    wheres = ("departments WHERE id = 3", "jobs WHERE id = 2")
    async with create_sessionmaker(engine_as)() as session:
        result = await ingest.ingest_csv(session, EMPLOYEES, _chunks(f"1,A,{T},3,2\n".encode()))
        assert result.inserted == 1
        async with admin.connect() as deleter:
            for where in wheres:
                await deleter.execute(
                    text(
                        "SET lock_timeout = '300ms'"
                        if BACKEND == "postgresql"
                        else "SET SESSION innodb_lock_wait_timeout = 1"
                    )
                )
                with pytest.raises(DBAPIError) as waited:  # the open load holds the lock
                    await deleter.execute(text(f"DELETE FROM {where}"))
                assert contention(waited.value) == "busy", waited.value
                await deleter.rollback()
        await session.commit()
    async with admin.connect() as deleter:
        for where in wheres:
            with pytest.raises(IntegrityError):
                await deleter.execute(text(f"DELETE FROM {where}"))
            await deleter.rollback()


async def test_a_department_deleted_during_a_batch_rejects_its_rows(
    engine_as: AsyncEngine, admin: AsyncEngine
) -> None:
    batch = [
        {"id": 1, "name": "A", "datetime": T, "department_id": 1, "job_id": 1},
        {"id": 2, "name": "B", "datetime": T, "department_id": 3, "job_id": 1},
    ]
    deleter = await _deleting(admin, "departments WHERE id = 3")
    try:
        async with create_sessionmaker(engine_as)() as session:
            store = asyncio.ensure_future(
                ingest.ingest_batch(session, EMPLOYEES, batch, body=orjson.dumps(batch))
            )
            await _wait_for_a_lock_wait(admin)
            await deleter.commit()
            summary = await store
            await session.commit()
    finally:
        await deleter.close()
    assert (summary.inserted, _rejects(summary)) == (1, [(1, ["department_id 3 does not exist"])])
