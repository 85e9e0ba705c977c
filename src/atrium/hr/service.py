"""The hr domain's operations, independent of HTTP (routes and the CLI both call these)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.hr import ingest
from atrium.hr.bulk.base import table_of
from atrium.hr.errors import BackupStoreUnavailable, UnknownTable
from atrium.hr.rows import TABLE_NAMES, TABLES, TableSpec
from atrium.hr.summary import IngestResult
from atrium.platform.s3 import store_for_url
from atrium.platform.storage import BlobStore, LocalBlobStore
from atrium.settings import Settings


def table_spec(name: str) -> TableSpec:
    """The HR table called ``name``, or a 404 problem naming the valid ones."""
    spec = TABLES.get(name)
    if spec is None:
        raise UnknownTable(f"no HR table {name!r}; use one of {', '.join(TABLE_NAMES)}")
    return spec


def backup_store(settings: Settings) -> BlobStore:
    """Where backups live: the object store of ``ATRIUM_BACKUP_URL`` (``s3://bucket/prefix``)
    when set, else the local folder ``ATRIUM_BACKUP_DIR``."""
    if settings.backup_url:
        try:
            return store_for_url(settings.backup_url)
        except ValueError as exc:
            raise BackupStoreUnavailable(f"ATRIUM_BACKUP_URL: {exc}") from exc
    return LocalBlobStore(settings.resolved_backup_dir)


async def store_batch(
    session: AsyncSession,
    spec: TableSpec,
    items: Sequence[Mapping[str, Any]],
    *,
    update: bool,
    body: bytes | None = None,
) -> IngestResult:
    """Validate and store one JSON batch (rejects logged and counted); ``body`` is the JSON
    the items were parsed from, which PostgreSQL may then read itself."""
    result = await ingest.ingest_batch(session, spec, items, update=update, body=body)
    ingest.record(result, "batch", len(items))
    return result


async def store_csv(
    session: AsyncSession,
    spec: TableSpec,
    source: AsyncIterable[bytes],
    *,
    update: bool,
    reject_cap: int,
    origin: ingest.Source = "csv",
) -> IngestResult:
    """Validate and store one streamed CSV file (rejects logged up to the cap, all counted)."""
    result = await ingest.ingest_csv(session, spec, source, update=update, reject_cap=reject_cap)
    ingest.record(result, origin, reject_cap)
    return result


async def list_rows(
    session: AsyncSession, spec: TableSpec, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of a table ordered by id, and the table's row count."""
    table = table_of(spec)
    total = (await session.execute(select(func.count()).select_from(table))).scalar_one()
    result = await session.execute(select(table).order_by(table.c.id).limit(limit).offset(offset))
    return [dict(row) for row in result.mappings()], total
