"""Async SQLAlchemy engine, sessions and the declarative base shared by every domain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import BigInteger, Integer, MetaData, event
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

# SQLite only auto-increments an INTEGER PRIMARY KEY, never a BIGINT one.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base; all models share one metadata (and so one Alembic history)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the process's engine: pooled asyncpg for PostgreSQL, WAL-mode SQLite otherwise."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {
        "server_settings": {
            "application_name": "atrium",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            # A statement whose client died (a killed replica) stops instead of running on,
            # holding locks such as an idempotency key's, until it would have finished.
            "client_connection_check_interval": str(settings.db_client_check_interval_ms),
        },
    }
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


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
