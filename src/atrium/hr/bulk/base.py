"""What every bulk loader does the same way, and the contract each engine's loader fills in.

A loader owns everything about storing, checking and backing up HR rows that depends on the
database engine; the services (:mod:`atrium.hr.ingest`, :mod:`atrium.hr.backup`) only call
it. The default methods here are the engine-neutral way (set-based key checks through
:meth:`Loader.present_ids`, then one INSERT of the storable rows); engines override what they
can do faster.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Literal

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from atrium.hr import rows as r
from atrium.hr.models import Department, HiredEmployee, Job
from atrium.hr.rows import Row, TableSpec
from atrium.hr.summary import IngestResult, Rejected

MODELS: dict[str, Any] = {
    "departments": Department,
    "jobs": Job,
    "hired_employees": HiredEmployee,
}

# "stored": every row is in; "objected": a key refused the batch and nothing was stored;
# "unsuitable": this engine has no shortcut for the batch. See Loader.store_clean_batch.
Shortcut = Literal["stored", "objected", "unsuitable"]
Candidates = list[tuple[int, Row]]  # (index in the upload, row valid on its own)
# Backups read a table in chunks: column names, and either column arrays or row dicts.
Chunk = tuple[tuple[str, ...], tuple[list[Any], ...] | list[dict[str, Any]]]
# Restores get each table's rows from the Avro file: (spool, spec, counter) -> rows.
RowsOf = Callable[[IO[bytes], TableSpec, list[int]], AsyncIterator[tuple[Any, ...]]]


def table_of(spec: TableSpec) -> Table:
    """The SQLAlchemy table behind a spec."""
    table: Table = MODELS[spec.name].__table__
    return table


def as_int(value: r.Value) -> int:
    """A value known to be an id (validated rows hold ints there)."""
    assert isinstance(value, int)
    return value


def references(spec: TableSpec) -> list[tuple[int, str, str]]:
    """(position, column, referenced table) of each foreign key of ``spec``."""
    return [(i, c.name, c.references) for i, c in enumerate(spec.columns) if c.references]


class Loader:
    """How one engine stores HR rows. Subclasses implement the abstract methods."""

    # --- JSON batches ---------------------------------------------------------------------

    async def prepare_write(self, session: AsyncSession, spec: TableSpec) -> None:
        """Called before a batch touches ``spec``'s table (e.g. to take a lock early)."""

    async def present_ids(
        self, session: AsyncSession, wanted: Mapping[str, Iterable[int]]
    ) -> dict[str, set[int]]:
        """Which of the ``wanted`` ids exist, per table (one query for all tables)."""
        raise NotImplementedError

    async def insert_rows(
        self, session: AsyncSession, spec: TableSpec, rows: Sequence[Row], *, update: bool
    ) -> set[int]:
        """Insert ``rows`` whose references were checked; the ids actually written (a row
        whose id exists meanwhile is skipped, or overwritten with ``update``)."""
        raise NotImplementedError

    async def store_clean_batch(
        self,
        session: AsyncSession,
        spec: TableSpec,
        items: Sequence[Mapping[str, Any]],
        body: bytes,
    ) -> Shortcut:
        """Store a new batch whose every row passed the strict filter, if this engine has a
        shortcut for it (``body`` is the batch's JSON text)."""
        return "unsuitable"

    async def store_rows(
        self,
        session: AsyncSession,
        spec: TableSpec,
        candidates: Candidates,
        result: IngestResult,
        *,
        update: bool,
        objected: bool,
    ) -> tuple[Candidates, set[int]]:
        """Store the rows valid on their own, rejecting those whose keys refuse them (into
        ``result``); (the storable rows, the ids written). ``objected``: a shortcut already
        found a key refusing the batch."""
        storable, key_rejects = await self.check_keys(
            session, spec, candidates, update=update, where="batch"
        )
        result.rejected.extend(key_rejects)
        written = await self.insert_rows(session, spec, [row for _, row in storable], update=update)
        return storable, written

    async def check_keys(
        self,
        session: AsyncSession,
        spec: TableSpec,
        candidates: Candidates,
        *,
        update: bool,
        where: str,
        seen: dict[int, int] | None = None,
    ) -> tuple[Candidates, list[Rejected]]:
        """Split rows valid on their own into storable ones and key rejects (one query).

        ``seen`` maps ids taken earlier in the same upload to their index; it is updated.
        """
        seen = {} if seen is None else seen
        unique: Candidates = []
        rejected: list[Rejected] = []
        refs = references(spec)
        wanted: dict[str, set[int]] = {}
        for position, _, target in refs:
            wanted.setdefault(target, set()).update(as_int(row[position]) for _, row in candidates)
        if not update:
            wanted[spec.name] = {as_int(row[0]) for _, row in candidates}
        present = await self.present_ids(session, wanted)
        taken = set() if update else present[spec.name]
        for index, row in candidates:
            errors = [
                r.missing_reference(name, as_int(row[position]))
                for position, name, target in refs
                if row[position] not in present[target]
            ]
            if errors:
                rejected.append(Rejected(index, errors))
                continue
            key = as_int(row[0])
            if key in seen:
                rejected.append(Rejected(index, [r.duplicate_in_upload(key, seen[key], where)]))
            elif key in taken:
                rejected.append(Rejected(index, [r.duplicate_existing(key)]))
            else:
                seen[key] = index
                unique.append((index, row))
        return unique, rejected

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
        """Validate and store one streamed CSV file (no header) in the session's transaction."""
        raise NotImplementedError

    # --- backup and restore ---------------------------------------------------------------

    async def begin_snapshot(self, connection: AsyncConnection) -> AsyncConnection:
        """``connection`` set up to read all tables from one consistent snapshot, its
        transaction begun."""
        raise NotImplementedError

    def read_chunks(self, connection: AsyncConnection, spec: TableSpec) -> AsyncIterator[Chunk]:
        """The rows of a table, in chunks (any order: a restore does not care)."""
        raise NotImplementedError

    async def restore(
        self, connection: AsyncConnection, spools: Mapping[str, IO[bytes]], rows_of: RowsOf
    ) -> dict[str, int]:
        """Replace the tables of ``spools`` (in load order) inside ``connection``'s
        transaction; rows per table. Raises RestoreConflict if a foreign key would break."""
        raise NotImplementedError
