"""Async SQLAlchemy engine, sessions and the declarative base shared by every domain."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import URL, MetaData, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from atrium.settings import Settings

# Stable constraint names make migrations reproducible on every backend (and let SQLite's
# batch mode find constraints by name).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; all models share one metadata (and so one Alembic history)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the process's engine: pooled asyncpg or asyncmy, or WAL-mode SQLite."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    pool: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_pre_ping": True,
    }
    if url.startswith("mysql"):
        return _create_mysql_engine(url, settings, pool)
    connect_args: dict[str, Any] = {
        "server_settings": {
            "application_name": "atrium",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            # A statement whose client died (a killed replica) stops instead of running on,
            # holding locks such as an idempotency key's, until it would have finished.
            "client_connection_check_interval": str(settings.db_client_check_interval_ms),
        },
    }
    return create_async_engine(url, connect_args=connect_args, **pool)


# What every MySQL/MariaDB session runs with, whatever the server's defaults: errors instead of
# silently truncated or zeroed values, and UTC for NOW()/CURRENT_TIMESTAMP (DATETIME columns
# hold naive UTC). Set in the handshake's init command, before SQLAlchemy reads the mode.
MYSQL_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY"
)


def _mysql_tls(url: URL) -> tuple[URL, ssl.SSLContext | None]:
    """Take MySQL's own ``ssl-mode`` option off the URL (the driver has no such argument).

    ``REQUIRED`` encrypts without checking the certificate, like libpq's ``sslmode=require``;
    ``VERIFY_CA`` / ``VERIFY_IDENTITY`` check it against the system's CAs (or ``ssl_ca=…``,
    which the driver takes itself); ``DISABLED`` / ``PREFERRED`` leave TLS to the driver.
    """
    names = [n for n in url.query if n.replace("-", "_").lower() in {"ssl_mode", "sslmode"}]
    if not names:
        return url, None
    mode = str(url.query[names[0]]).upper()
    url = url.difference_update_query(names)
    if mode in {"DISABLED", "DISABLE", "PREFERRED", "PREFER", "ALLOW"}:
        return url, None
    cafile = url.query.get("ssl_ca")
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if mode in {"REQUIRED", "REQUIRE"}:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode in {"VERIFY_CA", "VERIFY-CA"}:
        context.check_hostname = False
    elif mode not in {"VERIFY_IDENTITY", "VERIFY-FULL", "VERIFY_FULL"}:
        raise ValueError(f"unknown ssl-mode {mode!r} in the database URL")
    return url.difference_update_query(["ssl_ca"]), context


def _create_mysql_engine(url: str, settings: Settings, pool: dict[str, Any]) -> AsyncEngine:
    parsed, tls = _mysql_tls(make_url(url))
    connect_args: dict[str, Any] = {
        "charset": "utf8mb4",  # 4-byte UTF-8 (emoji) on the wire; tables are utf8mb4 too
        "init_command": f"SET SESSION sql_mode='{MYSQL_SQL_MODE}', time_zone='+00:00', sql_notes=0",
        # HR's bulk loader streams CSV through LOAD DATA LOCAL INFILE; the only server that
        # can ask for a file is the one ATRIUM_DATABASE_URL names.
        "local_infile": True,
    }
    if tls is not None:
        connect_args["ssl"] = tls
    engine = create_async_engine(
        parsed,
        connect_args=connect_args,
        # PostgreSQL's default, so concurrent requests see the same things on both engines
        # (InnoDB's REPEATABLE READ would pin a snapshot for the whole transaction).
        isolation_level="READ COMMITTED",
        # Servers (and proxies in front of them) drop idle connections after wait_timeout.
        pool_recycle=3600,
        **pool,
    )
    timeout_ms = settings.db_statement_timeout_ms

    def statement_timeout(dbapi_connection: Any, _record: Any) -> None:
        # MariaDB and MySQL name (and scale) the limit differently; the dialect knows which
        # server this is once the first connection is made, before this runs.
        if not timeout_ms:
            return
        cursor = dbapi_connection.cursor()
        if getattr(engine.dialect, "is_mariadb", False):
            cursor.execute(f"SET SESSION max_statement_time = {timeout_ms / 1000:.3f}")
        else:
            cursor.execute(f"SET SESSION max_execution_time = {int(timeout_ms)}")
        cursor.close()

    event.listen(engine.sync_engine, "connect", statement_timeout)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions keep loaded objects usable after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def is_postgres(engine_or_session: AsyncEngine | AsyncSession) -> bool:
    """True when talking to PostgreSQL (some operations have a faster PostgreSQL path)."""
    if isinstance(engine_or_session, AsyncSession):
        return engine_or_session.get_bind().dialect.name == "postgresql"
    return engine_or_session.dialect.name == "postgresql"


_AFTER_COMMIT = "atrium.after_commit"

AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run ``callback`` once the session's transaction has committed (never on rollback).

    For work that must only happen after the data is durable and visible to others, such as
    cache invalidation or waking a delivery worker. Services register it; whoever commits (the
    request dependency, a CLI command, a test) calls :func:`commit`.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


async def commit(session: AsyncSession) -> None:
    """Commit, then run the registered after-commit callbacks (all of them; first error raised)."""
    await session.commit()
    await run_after_commit(session)


async def run_after_commit(session: AsyncSession) -> None:
    """Run (and forget) the callbacks registered for the transaction that just committed."""
    callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
    error: BaseException | None = None
    for callback in callbacks:
        try:
            await callback()
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error


async def rollback(session: AsyncSession) -> None:
    """Roll back and forget the after-commit callbacks of the abandoned transaction."""
    session.info.pop(_AFTER_COMMIT, None)
    await session.rollback()


# Scope key of a session whose transaction is owned outside the route: the idempotency
# middleware opens it, and commits the route's work together with the response it stores.
OWNED_SESSION = "atrium.session"


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: commit when the handler returns, roll back when it raises.

    When the request's transaction is owned outside the route (see :data:`OWNED_SESSION`),
    the route works in that session and the owner commits; a raising handler still rolls its
    work back here.
    """
    owned: AsyncSession | None = request.scope.get(OWNED_SESSION)
    if owned is not None:
        try:
            yield owned
        except BaseException:
            await rollback(owned)
            raise
        return
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with maker() as session:
        try:
            yield session
        except BaseException:
            await rollback(session)
            raise
        else:
            await commit(session)


async def get_engine(request: Request) -> AsyncEngine:
    """The application's engine (for streaming/COPY work that bypasses the ORM session)."""
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was built with (tests build apps with their own)."""
    settings: Settings = request.app.state.settings
    return settings


# The dependencies are ``async`` though they await nothing: FastAPI would run a plain ``def``
# in its thread pool, two thread hand-offs per request.
# scope="function": commit before the response is sent. With FastAPI's default ("request")
# scope the commit would run after the client already has its 2xx, so a failed commit would go
# unreported and a client's next request could miss its own write.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
