# ruff: noqa: S608  (SQL here is assembled from our own table specs; values are bound)
"""MariaDB/MySQL: CSV through ``LOAD DATA LOCAL INFILE`` (:mod:`atrium.hr.bulk.mysql_csv`),
batches through the portable path (``INSERT IGNORE … RETURNING``), restores through
``LOAD DATA`` with the foreign keys checked once for the whole load.

Statements that check references themselves run with ``SET STATEMENT foreign_key_checks=0
FOR …`` on MariaDB: the setting lasts for that one statement, so a pooled connection can
never keep it. MySQL has no ``SET STATEMENT``; there InnoDB's own per-row checks stay on
(correct, somewhat slower). Bulk statements also lift the API's statement time limit the same
way.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import IO, Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from atrium.hr.bulk import mysql_csv as m
from atrium.hr.bulk.base import RowsOf, references
from atrium.hr.bulk.portable import PortableLoader
from atrium.hr.errors import ConcurrentWrite, ReferenceGone, RestoreConflict
from atrium.hr.rows import TABLE_NAMES, TABLES, TableSpec
from atrium.hr.summary import IngestResult, Rejected

# How often a load re-checks when a referenced row vanished between its check and its lock.
ATTEMPTS = 3


def bulk_prefix(dialect: Dialect, *, skip_foreign_keys: bool) -> str:
    """``SET STATEMENT … FOR`` for a bulk statement: no time limit, and no per-row foreign
    key checks where the caller checks and locks the references itself (MariaDB only)."""
    if not getattr(dialect, "is_mariadb", False):
        return ""
    settings = ["max_statement_time = 0"]
    if skip_foreign_keys:
        settings.append("foreign_key_checks = 0")
    return f"SET STATEMENT {', '.join(settings)} FOR "


async def _driver(connection: AsyncConnection) -> Any:
    return (await connection.get_raw_connection()).driver_connection


class MySQLLoader(PortableLoader):
    """The loader of one MariaDB/MySQL engine."""

    # --- CSV streams ----------------------------------------------------------------------

    async def ingest_csv(
        self,
        session: AsyncSession,
        spec: TableSpec,
        source: AsyncIterable[bytes],
        *,
        update: bool,
        reject_cap: int,
    ) -> IngestResult:
        """LOAD DATA straight into the table; staging only when keys object (module doc)."""
        connection = await session.connection()
        raw = await _driver(connection)
        prefix = bulk_prefix(connection.dialect, skip_foreign_keys=True)
        with m.new_spool() as spool:
            converter = m.Converter(spec, spool, reject_cap)
            stream = m.converted(converter, source)
            if update:
                async for _ in stream:  # the spool is all the staging path needs
                    pass
            else:
                await connection.execute(text("SAVEPOINT hr_ingest"))
                statement = m.load_sql(spec, spec.name, ignore=True, prefix=prefix)
                loaded, warnings = await m.load_local(raw, statement, stream)
                if (
                    not warnings
                    and loaded == converter.rows
                    and await self._references_hold(connection, spec)
                ):
                    await connection.execute(text("RELEASE SAVEPOINT hr_ingest"))
                    return _result(spec, converter, [], 0)
                # A key objected: nothing of this attempt stays; find out which rows.
                await connection.execute(text("ROLLBACK TO SAVEPOINT hr_ingest"))
            return await self._staged(connection, spec, converter, spool, update=update)

    async def _references_hold(self, connection: AsyncConnection, spec: TableSpec) -> bool:
        """Lock every department and job the table names (LOCK IN SHARE MODE); whether all
        of them exist. An index scan per key finds the distinct ids, however many rows."""
        for _, name, target in references(spec):
            named = await connection.execute(text(f"SELECT DISTINCT {name} FROM {spec.name}"))
            ids = [row[0] for row in named]
            if not ids:
                continue
            lock = text(
                f"SELECT COUNT(*) FROM {target} WHERE id IN :ids LOCK IN SHARE MODE"
            ).bindparams(bindparam("ids", expanding=True))
            if (await connection.execute(lock, {"ids": ids})).scalar_one() != len(ids):
                return False
        return True

    async def _staged(
        self,
        connection: AsyncConnection,
        spec: TableSpec,
        converter: m.Converter,
        spool: IO[bytes],
        *,
        update: bool,
    ) -> IngestResult:
        """Load the spool into staging, decide every row's keys set-based, insert the rest."""
        raw = await _driver(connection)
        dialect = connection.dialect
        await connection.execute(text(f"DROP TEMPORARY TABLE IF EXISTS {m.STAGE}, {m.CHECKED}"))
        await connection.execute(text(m.stage_ddl(spec)))
        staging = m.load_sql(
            spec, m.STAGE, ignore=False, prefix=bulk_prefix(dialect, skip_foreign_keys=False)
        )
        await m.load_local(raw, staging, m.spooled(spool))
        names = ", ".join(spec.column_names)
        values = ", ".join(f"v{i}" for i in range(1, len(spec.columns) + 1))
        conflict = ""
        if update:
            sets = ", ".join(f"{n} = VALUES({n})" for n in spec.column_names[1:])
            conflict = f" ON DUPLICATE KEY UPDATE {sets}"
        insert = (
            f"{bulk_prefix(dialect, skip_foreign_keys=True)}INSERT INTO {spec.name} ({names}) "
            f"SELECT {values} FROM {m.CHECKED} WHERE ok ORDER BY v1{conflict}"
        )
        for _ in range(ATTEMPTS):
            await connection.execute(text(f"DROP TEMPORARY TABLE IF EXISTS {m.CHECKED}"))
            await connection.execute(text(m.check_ddl(spec, update=update)))
            if await self._checked_references_locked(connection, spec):
                break
        else:
            raise ReferenceGone(
                f"referenced rows kept being deleted while {spec.name} loaded; nothing was "
                "stored, retry"
            )
        try:
            await connection.execute(text(insert))
        except IntegrityError as exc:
            raise ConcurrentWrite(
                f"another transaction is writing the same {spec.name} ids; nothing was "
                "stored, retry"
            ) from exc
        cap = converter.reject_cap
        found = await connection.execute(
            text(f"SELECT * FROM {m.CHECKED} WHERE NOT ok ORDER BY n LIMIT {int(cap)}")
        )
        keyed = [Rejected(row.n - 1, m.key_reasons(spec, row._mapping)) for row in found]
        count = await connection.execute(text(f"SELECT COUNT(*) FROM {m.CHECKED} WHERE NOT ok"))
        keyed_count = int(count.scalar_one())
        await connection.execute(text(f"DROP TEMPORARY TABLE {m.STAGE}, {m.CHECKED}"))
        return _result(spec, converter, keyed, keyed_count)

    async def _checked_references_locked(
        self, connection: AsyncConnection, spec: TableSpec
    ) -> bool:
        """Lock the rows the storable staged rows reference; whether all still exist."""
        for position, _, target in references(spec):
            column = f"v{position + 1}"
            wanted = await connection.execute(
                text(f"SELECT COUNT(DISTINCT {column}) FROM {m.CHECKED} WHERE ok")
            )
            locked = await connection.execute(
                text(
                    f"SELECT COUNT(*) FROM {target} WHERE id IN "
                    f"(SELECT {column} FROM {m.CHECKED} WHERE ok) LOCK IN SHARE MODE"
                )
            )
            if locked.scalar_one() != wanted.scalar_one():
                return False
        return True

    # --- backup and restore ---------------------------------------------------------------

    async def begin_snapshot(self, connection: AsyncConnection) -> AsyncConnection:
        """A REPEATABLE READ, READ ONLY transaction whose snapshot starts at once."""
        connection = await connection.execution_options(isolation_level="REPEATABLE READ")
        await connection.begin()
        await connection.execute(text("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
        return connection

    async def restore(
        self, connection: AsyncConnection, spools: Mapping[str, IO[bytes]], rows_of: RowsOf
    ) -> dict[str, int]:
        """Empty the tables and LOAD DATA them without per-row foreign-key checks, then check
        every foreign key with one join per key (as PostgreSQL's re-added constraints do)."""
        raw = await _driver(connection)
        prefix = bulk_prefix(connection.dialect, skip_foreign_keys=True)
        for name in reversed(TABLE_NAMES):
            if name in spools:
                await connection.execute(text(f"{prefix}DELETE FROM {name}"))
        counts: dict[str, int] = {}
        for name, spool in spools.items():
            spec = TABLES[name]
            counter = [0]
            statement = m.load_sql(spec, name, ignore=False, prefix=prefix)
            await m.load_local(raw, statement, _avro_rows(spec, rows_of(spool, spec, counter)))
            counts[name] = counter[0]
        for _, column, target in references(TABLES["hired_employees"]):
            broken = await connection.execute(
                text(
                    f"SELECT COUNT(*) FROM hired_employees h LEFT JOIN {target} t "
                    f"ON t.id = h.{column} WHERE t.id IS NULL"
                )
            )
            missing = int(broken.scalar_one())
            if missing:
                raise RestoreConflict(
                    f"restoring {', '.join(spools)} would leave {missing} hired_employees "
                    f"row(s) naming missing {target}; restore the referenced tables too. "
                    "Nothing was changed."
                )
        return counts


async def _avro_rows(spec: TableSpec, rows: AsyncIterator[tuple[Any, ...]]) -> AsyncIterator[bytes]:
    """Restored rows as LOAD DATA input, about a megabyte at a time."""
    batch: list[bytes] = []
    size = 0
    async for row in rows:
        line = m.canonical(spec, row)
        batch.append(line)
        size += len(line)
        if size >= 1 << 20:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _result(
    spec: TableSpec, converter: m.Converter, keyed: list[Rejected], keyed_count: int
) -> IngestResult:
    rejected = sorted(converter.rejected + keyed, key=lambda item: item.index)
    rejected_count = converter.rejected_count + keyed_count
    return IngestResult(
        table=spec.name,
        received=converter.received,
        inserted=converter.received - rejected_count,
        rejected=rejected[: converter.reject_cap],
        rejected_count=rejected_count,
    )
