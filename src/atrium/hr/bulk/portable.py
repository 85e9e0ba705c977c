"""The engine-neutral loader: Python validates every record, SQLAlchemy Core stores them.

Written for SQLite (the embedded default, see :mod:`atrium.hr.bulk.sqlite`) and usable as the
starting point of any engine without a faster path: parsing happens in Python, rows go in with
one ``executemany`` per chunk of :data:`CHUNK_ROWS`, keys are checked set-based per chunk, and
everything stays in the caller's one transaction.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import IO, Any

from sqlalchemy import Integer, column, delete, insert, literal, select, table, text, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from atrium.hr import rows as r
from atrium.hr.bulk.base import Candidates, Chunk, Loader, RowsOf, as_int, table_of
from atrium.hr.csvstream import LINES, NOT_TEXT, record_blocks
from atrium.hr.errors import ConcurrentWrite
from atrium.hr.rows import TABLE_NAMES, TABLES, Row, TableSpec
from atrium.hr.summary import IngestResult, Rejected
from atrium.platform import sql

CHUNK_ROWS = 5000
FETCH_ROWS = 50_000
# Runs of lines without a quote: their records are the lines, their fields split on commas.
_PLAIN_LINES = re.compile(rb'(?:[^"\n]*\n)+')
# Ids a CSV upload stored, with their record index, for "repeated in this file" reasons: a
# TEMP table rather than a dict keeps memory flat however large the file.
_SEEN = table("hr_seen", column("id", Integer), column("n", Integer))


class PortableLoader(Loader):
    """SQLAlchemy Core and the platform's statement seams only."""

    def insert_statement(self, spec: TableSpec, *, update: bool, ignore: bool) -> Any:
        """INSERT into ``spec``'s table: plain, skipping existing ids (``ignore``), or
        overwriting them (``update``)."""
        target = table_of(spec)
        if update:
            return sql.upsert(target, keys=["id"], update=spec.column_names[1:])
        if ignore:
            return sql.insert_ignore(target, keys=["id"])
        return insert(target)

    async def present_ids(
        self, session: AsyncSession, wanted: Mapping[str, Iterable[int]]
    ) -> dict[str, set[int]]:
        """Which of the ``wanted`` ids exist, per table: one UNION ALL query."""
        parts = []
        for position, (name, ids) in enumerate(wanted.items()):
            values = sorted(set(ids))
            if values:
                key = table_of(TABLES[name]).c.id
                parts.append(select(literal(position), key).where(key.in_(values)))
        found: dict[str, set[int]] = {name: set() for name in wanted}
        if parts:
            names = list(wanted)
            for position, key in await session.execute(union_all(*parts)):
                found[names[position]].add(key)
        return found

    async def insert_rows(
        self, session: AsyncSession, spec: TableSpec, rows: Sequence[Row], *, update: bool
    ) -> set[int]:
        """One INSERT of all ``rows``, existing ids skipped or overwritten; the ids written
        (RETURNING where the engine has it)."""
        if not rows:
            return set()
        names = spec.column_names
        statement = self.insert_statement(spec, update=update, ignore=not update)
        statement = statement.values([dict(zip(names, row, strict=True)) for row in rows])
        if sql.dialect_of(session).insert_returning:
            result = await session.execute(statement.returning(table_of(spec).c.id))
            return set(result.scalars())
        written: Any = await session.execute(statement)
        if not update and written.rowcount != len(rows):
            raise ConcurrentWrite(
                f"another request stored some of these {spec.name} ids meanwhile; nothing "
                "was stored, retry"
            )
        return {as_int(row[0]) for row in rows}

    async def ingest_csv(
        self,
        session: AsyncSession,
        spec: TableSpec,
        source: AsyncIterable[bytes],
        *,
        update: bool,
        reject_cap: int,
    ) -> IngestResult:
        """Parse in Python, store a chunk at a time, all in the session's transaction."""
        await self.prepare_write(session, spec)
        loader = _CsvLoad(self, session, spec, update=update, reject_cap=reject_cap)
        try:
            await loader.run(source)
        except IntegrityError as exc:
            raise ConcurrentWrite(
                f"{spec.name} changed while the file loaded; nothing was stored, retry"
            ) from exc
        return loader.result

    async def begin_snapshot(self, connection: AsyncConnection) -> AsyncConnection:
        """A plain transaction (SQLite reads one snapshot from its first read on)."""
        await connection.begin()
        return connection

    async def read_chunks(
        self, connection: AsyncConnection, spec: TableSpec
    ) -> AsyncIterator[Chunk]:
        """The table in id order, :data:`FETCH_ROWS` row dicts at a time (keyset pages: each
        query is short, whatever the table's size)."""
        source = table_of(spec)
        names = spec.column_names
        after: int | None = None
        while True:
            page = select(source).order_by(source.c.id).limit(FETCH_ROWS)
            if after is not None:
                page = page.where(source.c.id > after)
            rows = (await connection.execute(page)).all()
            if not rows:
                return
            yield names, [dict(zip(names, row, strict=True)) for row in rows]
            after = rows[-1][0]

    async def restore(
        self, connection: AsyncConnection, spools: Mapping[str, IO[bytes]], rows_of: RowsOf
    ) -> dict[str, int]:
        """Empty the tables (referencing ones first) and load them in load order; the
        foreign keys judge every row as it comes."""
        for name in reversed(TABLE_NAMES):
            if name in spools:
                await connection.execute(delete(table_of(TABLES[name])))
        return await self.load_spools(connection, spools, rows_of)

    async def load_spools(
        self, connection: AsyncConnection, spools: Mapping[str, IO[bytes]], rows_of: RowsOf
    ) -> dict[str, int]:
        """Insert every spool's rows with ``executemany`` in chunks; rows per table."""
        counts: dict[str, int] = {}
        for name, spool in spools.items():
            spec = TABLES[name]
            target = table_of(spec)
            counter = [0]
            batch: list[dict[str, Any]] = []
            async for row in rows_of(spool, spec, counter):
                batch.append(dict(zip(spec.column_names, row, strict=True)))
                if len(batch) >= FETCH_ROWS:
                    await connection.execute(insert(target), batch)
                    batch = []
            if batch:
                await connection.execute(insert(target), batch)
            counts[name] = counter[0]
        return counts


class _CsvLoad:
    """One CSV upload through the Python path: parse, check a chunk's keys, store it."""

    def __init__(
        self,
        loader: PortableLoader,
        session: AsyncSession,
        spec: TableSpec,
        *,
        update: bool,
        reject_cap: int,
    ) -> None:
        self.loader, self.session, self.spec = loader, session, spec
        self.update, self.reject_cap = update, reject_cap
        self.result = IngestResult(table=spec.name)
        self.statement = loader.insert_statement(spec, update=update, ignore=False)
        self.chunk: Candidates = []
        self.index = -1

    async def run(self, source: AsyncIterable[bytes]) -> None:
        """Read every record, store the valid ones; the first ``reject_cap`` rejects kept."""
        await self.session.execute(
            text("CREATE TEMPORARY TABLE IF NOT EXISTS hr_seen (id INTEGER PRIMARY KEY, n INTEGER)")
        )
        await self.session.execute(delete(_SEEN))
        async for pieces in record_blocks(source, _PLAIN_LINES):
            for kind, data in pieces:
                if kind == LINES:
                    lines = data.decode("utf-8").replace("\r\n", "\n").split("\n")
                    lines.pop()  # runs end with a line break
                    for line in lines:
                        self.index += 1
                        if line:  # blank lines are not records
                            self.take(line.split(","))
                else:
                    self.index += 1
                    if kind == NOT_TEXT:
                        self.result.received += 1
                        self.reject(Rejected(self.index, [r.BAD_TEXT]))
                    elif data:
                        self.take(r.split_line(data.decode("utf-8")))
                if len(self.chunk) >= CHUNK_ROWS:
                    await self.flush()
        await self.flush()
        await self.session.execute(text("DROP TABLE hr_seen"))
        self.result.rejected.sort(key=lambda item: item.index)
        del self.result.rejected[self.reject_cap :]

    def take(self, fields: list[str] | None) -> None:
        """Count one record; keep its row if valid on its own, else reject it."""
        self.result.received += 1
        if fields is None:
            self.reject(Rejected(self.index, [r.BAD_QUOTING]))
            return
        row, errors = r.check_fields(self.spec, fields)
        if row is None:
            self.reject(Rejected(self.index, errors))
        else:
            self.chunk.append((self.index, row))

    def reject(self, rejected: Rejected) -> None:
        """Count a reject; keep the first ``reject_cap`` by index (key rejects of a chunk
        arrive after later records' parse rejects), trimming so memory stays bounded."""
        result = self.result
        result.rejected_count += 1
        result.rejected.append(rejected)
        if len(result.rejected) > 2 * self.reject_cap + CHUNK_ROWS:
            result.rejected.sort(key=lambda item: item.index)
            del result.rejected[self.reject_cap :]

    async def flush(self) -> None:
        """Check the chunk's keys (one query, plus one for ids seen earlier) and store it."""
        if not self.chunk:
            return
        session = self.session
        ids = sorted({as_int(row[0]) for _, row in self.chunk})
        earlier = await session.execute(select(_SEEN.c.id, _SEEN.c.n).where(_SEEN.c.id.in_(ids)))
        seen: dict[int, int] = {int(key): int(n) for key, n in earlier}
        before = set(seen)
        storable, key_rejects = await self.loader.check_keys(
            session, self.spec, self.chunk, update=self.update, where="file", seen=seen
        )
        for rejected in key_rejects:
            self.reject(rejected)
        if storable:
            names = self.spec.column_names
            await session.execute(
                self.statement, [dict(zip(names, row, strict=True)) for _, row in storable]
            )
            await session.execute(
                insert(_SEEN),
                [{"id": key, "n": n} for key, n in seen.items() if key not in before],
            )
            self.result.inserted += len(storable)
        self.chunk.clear()
