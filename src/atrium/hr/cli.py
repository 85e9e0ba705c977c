"""``atrium hr …``: load CSV files, back up and restore, without a running server."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from atrium.hr import backup, service
from atrium.hr.rows import TABLE_NAMES, TABLES, TableSpec
from atrium.hr.summary import IngestResult
from atrium.platform.db import create_engine, create_sessionmaker
from atrium.platform.errors import AtriumError
from atrium.platform.logging import JsonFormatter
from atrium.platform.migrate import upgrade
from atrium.settings import Settings, get_settings

T = TypeVar("T")
READ_BYTES = 1 << 20
SHOWN_REJECTS = 20


@click.group("hr")
def hr() -> None:
    """HR data: load CSV files, back up and restore the tables."""


def _configure_logging(settings: Settings) -> None:
    # Logs (one line per rejected row, among others) go to stderr; stdout keeps the summary.
    handler = logging.StreamHandler(sys.stderr)
    handler._atrium = True  # type: ignore[attr-defined]  # replaced by the next configuration
    handler.setFormatter(
        JsonFormatter() if settings.log_json else logging.Formatter("%(levelname)s %(message)s")
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_atrium", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("alembic").setLevel("WARNING")


def _run(work: Callable[[Settings, Any], Awaitable[T]]) -> T:
    settings = get_settings()
    _configure_logging(settings)

    async def main() -> T:
        engine = create_engine(settings)
        try:
            if settings.should_auto_migrate:
                await upgrade(engine)
            return await work(settings, engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except AtriumError as exc:
        raise click.ClickException(str(exc.detail or exc)) from exc


def _files(path: Path, table: str | None) -> list[tuple[TableSpec, Path]]:
    if path.is_dir():
        names = [table] if table else list(TABLE_NAMES)
        found = [(TABLES[n], path / f"{n}.csv") for n in names if (path / f"{n}.csv").is_file()]
        if not found:
            expected = ", ".join(f"{n}.csv" for n in names)
            raise click.UsageError(f"{path} holds none of {expected}")
        return found  # TABLE_NAMES order: departments and jobs before hired_employees
    name = table or path.stem
    if name not in TABLES:
        raise click.UsageError(f"cannot tell the table of {path.name}: pass --table")
    return [(TABLES[name], path)]


async def _read(path: Path, advance: Callable[[int], None]) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, READ_BYTES):
            advance(len(chunk))
            yield chunk
    finally:
        handle.close()


def _summary(result: IngestResult) -> None:
    click.echo(
        f"{result.table}: {result.received} received, {result.inserted} inserted, "
        f"{result.rejected_count} rejected"
    )
    for rejected in result.rejected[:SHOWN_REJECTS]:
        click.echo(f"  record {rejected.index + 1}: {'; '.join(rejected.errors)}")
    if result.rejected_count > SHOWN_REJECTS:
        click.echo(f"  … and {result.rejected_count - SHOWN_REJECTS} more (see the log)")


@hr.command("load")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--table", type=click.Choice(TABLE_NAMES), help="Table of the file(s).")
@click.option(
    "--on-conflict",
    type=click.Choice(["reject", "update"]),
    default="reject",
    show_default=True,
    help="What to do with ids that already exist.",
)
def load(path: Path, table: str | None, on_conflict: str) -> None:
    """Load PATH: one CSV file (table from --table or the file name) or a folder with
    departments.csv, jobs.csv and hired_employees.csv (loaded in that order). Each file
    loads in one transaction: all its valid rows, or nothing."""
    files = _files(path, table)

    async def work(settings: Settings, engine: Any) -> None:
        maker = create_sessionmaker(engine)
        for spec, file in files:
            size = file.stat().st_size
            click.echo(f"loading {spec.name} from {file} ({size} bytes)", err=True)
            with click.progressbar(length=size, label=spec.name, file=sys.stderr) as bar:
                async with maker() as session:
                    result = await service.store_csv(
                        session,
                        spec,
                        _read(file, bar.update),
                        update=on_conflict == "update",
                        reject_cap=settings.hr_reject_list_cap,
                        origin="cli",
                    )
                    await session.commit()
            _summary(result)

    _run(work)


@hr.command("backup")
def backup_command() -> None:
    """Back up every HR table to Avro; prints the manifest (its "id" names the backup)."""

    async def work(settings: Settings, engine: Any) -> str:
        manifest = await backup.create_backup(engine, service.backup_store(settings))
        return manifest.model_dump_json(indent=2)

    click.echo(_run(work))


@hr.command("restore")
@click.argument("backup_id")
@click.option(
    "--table", "tables", multiple=True, type=click.Choice(TABLE_NAMES), help="Repeatable."
)
def restore(backup_id: str, tables: tuple[str, ...]) -> None:
    """Replace the tables (all, or each --table) with backup BACKUP_ID's, atomically."""

    async def work(settings: Settings, engine: Any) -> dict[str, int]:
        return await backup.restore_backup(
            engine, service.backup_store(settings), backup_id, list(tables) or None
        )

    counts = _run(work)
    click.echo(orjson.dumps({"backup": backup_id, "restored": counts}).decode())
