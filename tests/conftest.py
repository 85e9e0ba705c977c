"""Fixtures: a throw-away database (SQLite; PostgreSQL when ``ATRIUM_TEST_POSTGRES_URL`` is set;
MariaDB/MySQL when ``ATRIUM_TEST_MYSQL_URL`` is), Redis under a private key prefix when
``ATRIUM_TEST_REDIS_URL`` is set, one app per session, and a clean slate before every test
that touches storage.

Nothing here ever wipes a database it did not create: server tests run in a database made
for this session and dropped after it, Redis tests only delete keys under their own prefix.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from atrium.app import create_app
from atrium.platform.db import Base
from atrium.platform.logging import JsonFormatter
from atrium.platform.models import import_all_models
from atrium.settings import Settings
from tests.support import (
    SERVER_LOGS,
    TEST_SECRETS,
    ServerProcess,
    run_server,
    secret,
    settings_env,
)

PG_ADMIN_URL = os.environ.get("ATRIUM_TEST_POSTGRES_URL")
MYSQL_ADMIN_URL = os.environ.get("ATRIUM_TEST_MYSQL_URL")
if PG_ADMIN_URL and MYSQL_ADMIN_URL:
    raise pytest.UsageError(
        "set ATRIUM_TEST_POSTGRES_URL or ATRIUM_TEST_MYSQL_URL, not both: a run tests one engine"
    )
SERVER_URL = PG_ADMIN_URL or MYSQL_ADMIN_URL
BACKEND = "postgresql" if PG_ADMIN_URL else "mysql" if MYSQL_ADMIN_URL else "sqlite"
_ENGINE_DESELECTED: list[str] = []
# What behaves the same whatever the database is: run in CI's SQLite and PostgreSQL runs, not a
# third time in its MariaDB run (ATRIUM_TEST_ENGINE_INDEPENDENT_ONCE=1, set by .ci/run only).
ENGINE_INDEPENDENT = {
    "tests/deploy/test_cluster": "nginx in front of replicas: balancing, draining, limits",
    "tests/deploy/test_image.py": "the image's entrypoint and signals",
    "tests/deploy/test_serving.py": "gunicorn/uvicorn serving and shutdown",
    "tests/docs/": "documentation pages, examples and screenshots",
    "tests/platform/test_logging": "log lines and their writer",
    "tests/platform/test_tracing.py": "OpenTelemetry spans",
    "tests/platform/test_multiprocess.py": "metrics across worker processes",
    "tests/platform/test_ratelimit": "rate limits live in Redis or in process",
    "tests/platform/test_dashboard.py": "the Grafana dashboard's queries",
}
REDIS_URL = os.environ.get("ATRIUM_TEST_REDIS_URL")
RUN_ID = uuid.uuid4().hex[:10]
# The admin key every test client sends; re-created after each wipe (see ``admin_api_key``).
ADMIN_API_KEY = secret(f"atr_test_admin_{RUN_ID}")


def pytest_report_header() -> list[str]:
    """Say which real backends this run uses (so a log shows what was proven)."""
    return [
        f"atrium database: {BACKEND}",
        f"atrium redis: {'yes' if REDIS_URL else 'no (in-process)'}",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (never silently skip) what this run's engine cannot run.

    ``postgres`` ("needs the real servers") tests run on PostgreSQL and MariaDB/MySQL, not on
    the embedded default; ``only_on(engine, reason=...)`` tests check one engine's own
    feature, and the run's summary lists each one deselected with its reason.
    """
    keep: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    once = BACKEND == "mysql" and os.environ.get("ATRIUM_TEST_ENGINE_INDEPENDENT_ONCE") == "1"
    for item in items:
        why = next((w for p, w in ENGINE_INDEPENDENT.items() if item.nodeid.startswith(p)), None)
        if once and why is not None:
            _ENGINE_DESELECTED.append(f"{item.nodeid}: engine-independent ({why})")
            deselected.append(item)
            continue
        only_on = item.get_closest_marker("only_on")
        if only_on is not None:
            reason = only_on.kwargs.get("reason")
            if not only_on.args or not reason:
                raise pytest.UsageError(f"{item.nodeid}: only_on needs an engine and a reason")
            if BACKEND not in only_on.args:
                _ENGINE_DESELECTED.append(f"{item.nodeid}: {reason}")
                deselected.append(item)
                continue
        if "postgres" in item.keywords and not SERVER_URL:
            deselected.append(item)
            continue
        keep.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which tests this engine did not run, and why."""
    if _ENGINE_DESELECTED:
        terminalreporter.section(f"not run on {BACKEND} (engine-specific)")
        for line in _ENGINE_DESELECTED:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``ATRIUM_TEST_REQUIRE_ALL=1`` (CI's full run) a skipped test fails the run."""
    if os.environ.get("ATRIUM_TEST_REQUIRE_ALL") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        print(f"\nFAIL: {skipped} test(s) skipped in a run that must execute everything")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_logs() -> Iterator[None]:
    """Fail the run if any log line (in-process or of a server process) shows a test secret."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())  # what stdout would get, masking included
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
    outputs = {"in-process logs": lines.getvalue()}
    outputs.update({str(path): path.read_text(errors="replace") for path in SERVER_LOGS})
    leaks = [
        f"{value[:3]}… in {where}"
        for where, text in outputs.items()
        for value in sorted(TEST_SECRETS)
        if value in text
    ]
    assert not leaks, f"test secrets leaked into logs: {leaks}"


@pytest.fixture(scope="session")
def backend() -> str:
    """``postgresql``, ``mysql`` (MariaDB too) or ``sqlite``: what this run's database is."""
    return BACKEND


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's data folder (SQLite file, generated keys, backups)."""
    return tmp_path_factory.mktemp("atrium-data")


@pytest.fixture(scope="session")
async def database_url(data_dir: Path) -> AsyncIterator[str]:
    """A database that exists only for this session."""
    if MYSQL_ADMIN_URL:
        async with _mysql_database(MYSQL_ADMIN_URL) as url:
            yield url
        return
    if not PG_ADMIN_URL:
        yield f"sqlite:///{data_dir / 'atrium.db'}"
        return
    import asyncpg

    name = f"atrium_test_{RUN_ID}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def _mysql_database(admin_url: str) -> AsyncIterator[str]:
    """A MariaDB/MySQL database for this session, dropped after it (whatever happened)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from atrium.settings import to_async_url

    name = f"atrium_test_{RUN_ID}"
    admin = create_async_engine(to_async_url(admin_url), poolclass=NullPool)
    async with admin.connect() as connection:
        await connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    base, _, rest = admin_url.rpartition("/")
    query = rest.partition("?")[2]
    try:
        yield f"{base}/{name}" + (f"?{query}" if query else "")
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        await admin.dispose()


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    """Settings of the session's app and of the servers tests start."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        data_dir=data_dir,
        database_url=database_url,
        auto_migrate=True,
        redis_url=REDIS_URL,
        redis_prefix=f"atrium-test-{RUN_ID}:",
        log_level="INFO",
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """One application for the session, its lifespan (engines, Redis) entered."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def engine(app: FastAPI) -> AsyncEngine:
    """The session app's engine."""
    engine: AsyncEngine = app.state.engine
    return engine


async def _wipe(app: FastAPI) -> None:
    import_all_models()
    engine: AsyncEngine = app.state.engine
    quote = engine.dialect.identifier_preparer.quote
    tables = [quote(t.name) for t in Base.metadata.sorted_tables]
    async with engine.begin() as connection:
        if tables and BACKEND == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            # Children before parents, so foreign keys hold at every step (a per-test TRUNCATE
            # would cost MariaDB a table rebuild each).
            for table in reversed(tables):
                await connection.execute(text(f"DELETE FROM {table}"))
    redis: Any = app.state.redis
    if redis is not None:
        prefix = app.state.settings.redis_prefix
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    for hook in getattr(app.state, "test_reset_hooks", []):
        await hook()


@pytest.fixture
async def clean(app: FastAPI) -> FastAPI:
    """Empty tables and this run's Redis keys before the test (so leftovers never leak in)."""
    await _wipe(app)
    return app


@pytest.fixture(scope="session")
async def admin_api_key(app: FastAPI) -> str:
    """An admin API key (no practical rate limit) that exists before every test."""
    from atrium.platform.apikeys import hash_key

    async def provision() -> None:
        store = app.state.api_keys
        if await store.lookup(hash_key(ADMIN_API_KEY)) is None:
            await store.create("tests", ("admin",), rate_limit=1_000_000, key=ADMIN_API_KEY)

    app.state.test_reset_hooks = [*getattr(app.state, "test_reset_hooks", []), provision]
    await provision()
    return ADMIN_API_KEY


@pytest.fixture
async def client(clean: FastAPI, admin_api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the session app in-process, sending the admin API key."""
    transport = httpx.ASGITransport(app=clean)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-API-KEY": admin_api_key}
    ) as c:
        yield c


@pytest.fixture
async def anon_client(clean: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client without an API key (for the 401/403 paths)."""
    transport = httpx.ASGITransport(app=clean)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
async def session(clean: FastAPI) -> AsyncIterator[AsyncSession]:
    """A database session for service-level tests (the test commits what it needs)."""
    async with clean.state.sessionmaker() as s:
        yield s


@pytest.fixture(scope="session")
def live_server(
    app: FastAPI,
    settings: Settings,
    admin_api_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A real ``atrium serve`` process on loopback sharing the session's database (and keys)."""
    with run_server(settings_env(settings), tmp_path_factory.mktemp("server-logs")) as server:
        server.schemathesis_headers = [f"X-API-KEY: {admin_api_key}"]  # type: ignore[attr-defined]
        yield server
