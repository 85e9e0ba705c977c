# ruff: noqa: S608  (SQL here is assembled from our own table specs; values are bound)
"""PostgreSQL: batches as one statement over bound arrays or the request's own JSON, CSV
through COPY (:mod:`atrium.hr.bulk.postgres_csv`), backups as column arrays, restores by COPY.

Inserts always run in id order (``ORDER BY id``): two batches sharing ids then lock them in
the same order and wait for each other instead of deadlocking.

Foreign keys: PostgreSQL checks them with a trigger call per row, which costs more than the
insert itself. Where the whole set of referenced rows is checked and locked at once (CSV
loads, clean batches), the triggers would prove nothing more, and the statement runs with
``session_replication_role = replica`` if the role may set it (superuser, or
``GRANT SET ON PARAMETER session_replication_role TO …`` on PostgreSQL 15+). Whether it may
is found out once per engine, by trying; without it the triggers simply run too.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from functools import cache
from typing import IO, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from atrium.hr.bulk import postgres_csv
from atrium.hr.bulk.base import Candidates, Chunk, Loader, RowsOf, Shortcut, as_int
from atrium.hr.errors import RestoreConflict
from atrium.hr.rows import TABLES, Row, TableSpec
from atrium.hr.summary import IngestResult

FETCH_ROWS = 50_000
_TYPES = {"int": "int4", "text": "text", "datetime": "timestamptz"}
# SQLSTATE classes: 23 a key objected, 22 a value (e.g. a date the calendar lacks) did.
_OBJECTIONS = {"22", "23"}
# (constraint, column, referenced table) of hired_employees, named as the migration names them.
_FOREIGN_KEYS = [
    (f"fk_hired_employees_{c.name}_{c.references}", c.name, c.references)
    for c in TABLES["hired_employees"].columns
    if c.references
]


def _unnest(spec: TableSpec) -> str:
    arrays = ", ".join(f"CAST(:c{i} AS {_TYPES[c.kind]}[])" for i, c in enumerate(spec.columns))
    return f"SELECT * FROM unnest({arrays}) AS u({', '.join(spec.column_names)})"


def _arrays(spec: TableSpec, rows: Sequence[Row]) -> dict[str, list[Any]]:
    return {f"c{i}": [row[i] for row in rows] for i in range(len(spec.columns))}


@cache
def _json_insert_sql(spec: TableSpec, *, locked: bool) -> str:
    """INSERT of a JSON array of rows; ``locked``: also lock the referenced rows and return
    how many of them do not exist (the caller then rolls back)."""
    record = ", ".join(f"{c.name} {_TYPES[c.kind]}" for c in spec.columns)
    rows = f"json_to_recordset(CAST($1 AS json)) AS x({record})"
    insert = f"INSERT INTO {spec.name} ({', '.join(spec.column_names)}) "
    if not locked:
        return insert + f"SELECT * FROM {rows} ORDER BY id"
    missing = " + ".join(
        f"(SELECT count(DISTINCT {c.name}) FROM x) - (SELECT count(*) FROM (SELECT 1 "
        f"FROM {c.references} WHERE id IN (SELECT {c.name} FROM x) FOR KEY SHARE) l{i})"
        for i, c in enumerate(spec.columns)
        if c.references
    )
    return (
        f"WITH x AS MATERIALIZED (SELECT * FROM {rows}), "
        f"ins AS ({insert}SELECT * FROM x ORDER BY id) "
        f"SELECT {missing}"
    )


class PostgresLoader(Loader):
    """The loader of one PostgreSQL engine."""

    def __init__(self) -> None:
        # May this engine's role skip the foreign-key triggers? None: not tried yet.
        self.may_skip_triggers: bool | None = None

    async def skip_triggers(self, raw: Any) -> bool:
        """In the current transaction (or savepoint), turn the foreign-key triggers off if the
        role may; whether it did. Callers lock and check every referenced row themselves."""
        import asyncpg

        if self.may_skip_triggers is False:
            return False
        try:
            await raw.execute(
                "SAVEPOINT hr_role; SET LOCAL session_replication_role = replica; "
                "RELEASE SAVEPOINT hr_role"
            )
        except asyncpg.InsufficientPrivilegeError:
            await raw.execute("ROLLBACK TO SAVEPOINT hr_role; RELEASE SAVEPOINT hr_role")
            self.may_skip_triggers = False
            return False
        self.may_skip_triggers = True
        return True

    async def _begin_skipping_triggers(self, raw: Any) -> None:
        # BEGIN and, where the role may, triggers off: one round trip once that is known.
        import asyncpg

        if self.may_skip_triggers:
            try:
                await raw.execute("BEGIN; SET LOCAL session_replication_role = replica")
                return
            except asyncpg.InsufficientPrivilegeError:  # revoked since
                await raw.execute("ROLLBACK")
                self.may_skip_triggers = None
        await raw.execute("BEGIN")
        if self.may_skip_triggers is None:
            await self.skip_triggers(raw)

    # --- JSON batches ---------------------------------------------------------------------

    async def present_ids(
        self, session: AsyncSession, wanted: Mapping[str, Iterable[int]]
    ) -> dict[str, set[int]]:
        """Which of the ``wanted`` ids exist, per table: one query, arrays bound."""
        parts, params = [], {}
        for position, (name, ids) in enumerate(wanted.items()):
            values = sorted(set(ids))
            if values:
                assert name in TABLES  # table names are ours, never the client's
                params[f"ids{position}"] = values
                parts.append(
                    f"SELECT {position} AS t, id FROM {name} "
                    f"WHERE id = ANY(CAST(:ids{position} AS int4[]))"
                )
        found: dict[str, set[int]] = {name: set() for name in wanted}
        if parts:
            names = list(wanted)
            result = await session.execute(text(" UNION ALL ".join(parts)), params)
            for position, key in result:
                found[names[position]].add(key)
        return found

    async def insert_rows(
        self, session: AsyncSession, spec: TableSpec, rows: Sequence[Row], *, update: bool
    ) -> set[int]:
        """One INSERT from bound arrays, ON CONFLICT DO NOTHING (or DO UPDATE), RETURNING id."""
        return await self._insert_returning(session, spec, rows, update=update)

    async def _insert_returning(
        self,
        session: AsyncSession,
        spec: TableSpec,
        rows: Sequence[Row],
        *,
        update: bool,
        check_refs: bool = False,
    ) -> set[int]:
        # One statement, arrays bound once: far cheaper than 1000 VALUES tuples or
        # executemany. ``check_refs``: leave out rows whose referenced rows do not exist
        # (a semi-join) instead of failing on the foreign key.
        if not rows:
            return set()
        names = spec.column_names
        conflict = (
            "DO UPDATE SET " + ", ".join(f"{n} = EXCLUDED.{n}" for n in names[1:])
            if update
            else "DO NOTHING"
        )
        refs = [
            f"EXISTS (SELECT 1 FROM {c.references} r WHERE r.id = u.{c.name})"
            for c in spec.columns
            if c.references and check_refs
        ]
        where = f" WHERE {' AND '.join(refs)}" if refs else ""
        statement = text(
            f"INSERT INTO {spec.name} ({', '.join(names)}) {_unnest(spec)}{where} "
            f"ORDER BY id ON CONFLICT (id) {conflict} RETURNING id"
        )
        result = await session.execute(statement, _arrays(spec, rows))
        return set(result.scalars())

    async def store_clean_batch(
        self,
        session: AsyncSession,
        spec: TableSpec,
        items: Sequence[Mapping[str, Any]],
        body: bytes,
    ) -> Shortcut:
        """Hand PostgreSQL the batch's JSON text itself (``json_to_recordset``).

        Building typed arrays in Python cost ~3 ms of the API's CPU per 1000 rows; this costs
        the API nearly nothing and the database about as much as the arrays (``json``, with
        the record typed directly; ``jsonb`` or a text-then-cast date-time was ~20% slower
        there; measured). It is exact because the filter guarantees the keys, types, ranges
        and ISO shape of every value; what it cannot know (an existing id, a missing
        department, February 30) makes the INSERT raise, or the reference count differ.
        PostgreSQL's json functions, like orjson, take the last of duplicate keys.
        """
        ids = [item["id"] for item in items]
        if len(set(ids)) != len(ids):
            return "unsuitable"
        for column in spec.columns:
            if column.kind != "datetime":
                continue
            for item in items:
                value: str = item[column.name]
                if value.startswith(("0001", "9999")):
                    return "unsuitable"  # may leave the representable range with the offset
                if value[-1] != "Z" and value[-6] not in "+-":
                    return "unsuitable"  # no zone: UTC for us, the session's zone for PostgreSQL
        if session.in_transaction():
            # The request already did database work: stay inside its transaction.
            try:
                async with session.begin_nested():
                    statement = _json_insert_sql(spec, locked=False).replace("$1", ":rows")
                    await session.execute(text(statement), {"rows": body.decode()})
            except DBAPIError as exc:
                if str(getattr(exc.orig, "sqlstate", "") or "")[:2] in _OBJECTIONS:
                    return "objected"
                raise
            return "stored"
        # Usual case: this INSERT is the request's only write, so it runs in a transaction
        # of its own on a pooled connection, without the session's BEGIN/SAVEPOINT round trips.
        engine: AsyncEngine = session.bind  # type: ignore[assignment]
        async with engine.connect() as connection:
            raw: Any = (await connection.get_raw_connection()).driver_connection
            return await self._store_json(raw, spec, body.decode())

    async def _store_json(self, raw: Any, spec: TableSpec, rows: str) -> Shortcut:
        import asyncpg

        if not any(column.references for column in spec.columns):
            # One statement is atomic by itself: autocommit, one round trip.
            try:
                await raw.execute(_json_insert_sql(spec, locked=False), rows)
            except asyncpg.PostgresError as exc:
                if str(exc.sqlstate or "")[:2] in _OBJECTIONS:
                    return "objected"
                raise
            return "stored"
        # BEGIN, then lock the referenced rows and insert, then COMMIT; the triggers are off
        # where the role may (three round trips instead of one, ~5 ms of database time less
        # per 1000 rows; measured).
        await self._begin_skipping_triggers(raw)
        try:
            missing = await raw.fetchval(_json_insert_sql(spec, locked=True), rows)
        except asyncpg.PostgresError as exc:
            await raw.execute("ROLLBACK")
            if str(exc.sqlstate or "")[:2] in _OBJECTIONS:
                return "objected"
            raise
        except BaseException:
            await raw.execute("ROLLBACK")
            raise
        if missing:  # a department or job does not exist: nothing stored
            await raw.execute("ROLLBACK")
            return "objected"
        await raw.execute("COMMIT")
        return "stored"

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
        """New rows: a plain INSERT first, keys judging; upserts and known objections: an
        INSERT that leaves out rows with missing references; reasons only for those."""
        rows = [row for _, row in candidates]
        if not rows:
            return [], set()
        if len({row[0] for row in rows}) != len(rows):
            return await super().store_rows(
                session, spec, candidates, result, update=update, objected=objected
            )
        if not update and not objected:
            # The usual batch is all new rows naming existing departments and jobs: the
            # cheapest statement there is, in a savepoint. No ON CONFLICT, no semi-join, no
            # RETURNING: ~20% more rows per second (measured).
            try:
                async with session.begin_nested():
                    columns = ", ".join(spec.column_names)
                    statement = f"INSERT INTO {spec.name} ({columns}) {_unnest(spec)} ORDER BY id"
                    await session.execute(text(statement), _arrays(spec, rows))
            except IntegrityError:
                return await super().store_rows(
                    session, spec, candidates, result, update=update, objected=True
                )
            return candidates, {as_int(row[0]) for row in rows}
        written = await self._insert_returning(session, spec, rows, update=update, check_refs=True)
        left = [(index, row) for index, row in candidates if row[0] not in written]
        if not left:
            return candidates, written
        _, key_rejects = await self.check_keys(session, spec, left, update=update, where="batch")
        result.rejected.extend(key_rejects)
        explained = {rejected.index for rejected in key_rejects}
        return [c for c in candidates if c[0] not in explained], written

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
        """COPY into staging, one statement to check and insert (see ``postgres_csv``)."""
        return await postgres_csv.ingest_csv(
            await session.connection(),
            spec,
            source,
            update=update,
            reject_cap=reject_cap,
            skip_triggers=self.skip_triggers,
        )

    # --- backup and restore ---------------------------------------------------------------

    async def begin_snapshot(self, connection: AsyncConnection) -> AsyncConnection:
        """A READ ONLY, REPEATABLE READ transaction without statement timeout."""
        connection = await connection.execution_options(isolation_level="REPEATABLE READ")
        await connection.begin()
        await connection.execute(text("SET TRANSACTION READ ONLY"))
        await connection.execute(text("SET LOCAL statement_timeout = 0"))
        return connection

    async def read_chunks(
        self, connection: AsyncConnection, spec: TableSpec
    ) -> AsyncIterator[Chunk]:
        """Each chunk as one row of column arrays (keyset pagination on the primary key)."""
        # asyncpg then builds plain lists in C instead of a Record per row, which made
        # fetching ~2.5x faster (measured). The server also turns timestamps into epoch
        # micros. The aggregates read the same rows in the same order, so the arrays line up;
        # which order that is does not matter (a restore does not care), so no ORDER BY
        # inside them: that would sort each chunk once per column.
        raw: Any = (await connection.get_raw_connection()).driver_connection
        names = spec.column_names
        arrays = ", ".join(
            f"array_agg((extract(epoch FROM {c.name}) * 1000000)::int8)"
            if c.kind == "datetime"
            else f"array_agg({c.name})"
            for c in spec.columns
        )
        query = (
            f"SELECT max(id), {arrays} FROM (SELECT * FROM {spec.name} "
            f"WHERE id > $1::int8 ORDER BY id LIMIT {FETCH_ROWS}) chunk"
        )
        statement = await raw.prepare(query)
        after = -(2**31) - 1
        while True:
            last, *columns = await statement.fetchrow(after)
            if last is None:
                return
            yield names, tuple(columns)
            after = last

    async def restore(
        self, connection: AsyncConnection, spools: Mapping[str, IO[bytes]], rows_of: RowsOf
    ) -> dict[str, int]:
        """TRUNCATE and COPY, with the foreign keys dropped for the load and re-added after
        it: one join validates them instead of a trigger call per row (as ``pg_restore``)."""
        import asyncpg

        await connection.execute(text("SET LOCAL statement_timeout = 0"))
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('atrium.hr.restore'))")
        )
        raw: Any = (await connection.get_raw_connection()).driver_connection
        drops = ", ".join(f"DROP CONSTRAINT {name}" for name, _, _ in _FOREIGN_KEYS)
        await raw.execute(f"ALTER TABLE hired_employees {drops}")
        await raw.execute(f"TRUNCATE {', '.join(spools)}")
        counts: dict[str, int] = {}
        for name, spool in spools.items():
            spec = TABLES[name]
            counter = [0]
            await raw.copy_records_to_table(
                name, records=rows_of(spool, spec, counter), columns=list(spec.column_names)
            )
            counts[name] = counter[0]
        adds = ", ".join(
            f"ADD CONSTRAINT {name} FOREIGN KEY ({column}) REFERENCES {target} (id)"
            for name, column, target in _FOREIGN_KEYS
        )
        try:
            await raw.execute(f"ALTER TABLE hired_employees {adds}")
        except asyncpg.ForeignKeyViolationError as exc:
            raise RestoreConflict(
                f"restoring {', '.join(spools)} would leave hired_employees naming missing rows "
                f"({exc.detail or exc}); restore the referenced tables too. Nothing was changed."
            ) from exc
        return counts
