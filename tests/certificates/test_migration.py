"""The certificates migration: matches the models, and downgrades and upgrades cleanly."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.db import Base, create_engine
from atrium.platform.migrate import upgrade
from atrium.platform.models import import_all_models
from atrium.settings import Settings

TABLES = {"users", "certificates", "certificate_events"}


def _differences(connection: Connection) -> list[object]:
    import_all_models()
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diffs = compare_metadata(context, Base.metadata)
    mine = []
    for diff in diffs:
        text = repr(diff)
        if any(f"'{table}'" in text for table in TABLES):
            mine.append(diff)
    return mine


async def test_migration_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    engine = create_engine(settings)
    try:
        await upgrade(engine)
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert names >= TABLES
        await upgrade_to(engine, "0002")
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert not names & TABLES
        await upgrade(engine)
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert names >= TABLES
    finally:
        await engine.dispose()


async def upgrade_to(engine: AsyncEngine, revision: str) -> None:
    from alembic import command

    from atrium.platform.migrate import alembic_config

    def _downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_downgrade)
