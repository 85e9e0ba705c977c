# ruff: noqa: S608  (SQL here is assembled from our own constants only: table specs and
# reason texts; every value from a file travels through COPY or a bound parameter)
"""PostgreSQL CSV ingest: stream the bytes into COPY, then validate and insert set-based.

Design, chosen by measurement on 1M rows (``bench/hr.py``; figures in docs/performance.md):

1. The records of :func:`atrium.hr.csvstream.record_blocks` stream through
   :func:`copy_csv` into ``COPY … FROM STDIN (FORMAT csv)`` of a TEMP (so WAL-free) staging
   table whose columns already have the target types. A compiled regex (C speed, whole runs
   of lines per call) lets through only lines COPY cannot choke on: plain integers of at most
   9 digits, a non-blank unquoted text, an ISO date-time whose day exists. PostgreSQL's own
   COPY then splits and converts them, the cheapest conversion there is, and it runs on the
   database's core while Python scans the next block. Every other record (empty field, wrong
   column count, quotes, line breaks inside quotes, odd dates, bad UTF-8…) is staged whole in
   a ``raw`` column, so COPY never aborts the load.
   Alternative measured first: one text column per line (``FORMAT text``, delimiter
   ``\\x01``, which beat ``FORMAT csv`` with a never-used quote byte, TEMP beating UNLOGGED),
   split and checked in SQL (``string_to_array``, regexes, casts guarded by CASE): ~2.5 s
   more per 1M rows than ``psql \\copy``, where typed staging ends up ahead of it. A regex
   over every row in SQL cost ~0.7 µs per field; the Python regex scan costs ~0.3 s per 1M
   lines and runs while the database works.
2. One SQL statement validates the few raw records with the same rules as the Python path
   (regexes, casts guarded by CASE so that nothing can raise), joins the referenced tables
   for foreign keys (hash joins: one pass, not a query per row), inserts the valid rows and
   returns the counts and the first rejects with their reasons.
3. The same statement locks every department and job the stored rows name, once each
   (``FOR KEY SHARE``: the very lock PostgreSQL's foreign-key trigger takes per row, so a
   concurrent DELETE of one waits for our commit and then fails on the key), and counts those
   it could not lock: one deleted since the join saw it makes the statement run again, which
   then rejects the rows naming it. With the references checked and locked for the whole
   load, the per-row foreign-key triggers, ~80 % of a load's time, prove nothing more: where
   the role may (superuser, or ``GRANT SET ON PARAMETER session_replication_role``) the
   INSERT runs with ``session_replication_role = replica`` for that one statement, which
   skips them. Without that grant the triggers run as well; the result is the same.
4. Duplicate ids cost nothing on the first attempt, which runs inside a savepoint and leaves
   them to the primary key. Only if that raises a unique violation does the statement run
   again with explicit detection (a join with the table, a window over the file's ids). A
   retry of a loaded file thus fails fast at its first row, and a fresh file pays nothing.

Everything runs in the caller's one transaction: a killed process or a dropped connection
leaves nothing behind, and a retry stores exactly the rows that are missing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from functools import cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from atrium.hr import rows as r
from atrium.hr.csvstream import LINES, RECORD, Kind, record_blocks
from atrium.hr.errors import ConcurrentWrite, ReferenceGone
from atrium.hr.rows import TableSpec
from atrium.hr.summary import IngestResult, Rejected

STAGE = "hr_stage"
# How often a load re-checks when a referenced row vanished between its check and its lock.
ATTEMPTS = 3
_SQL_TYPES = {"int": "int4", "text": "text", "datetime": "timestamptz"}
_WS = "E' \\t\\r\\n\\f\\v'"
_TS_MIN = "'0001-01-01 00:00:00+00'::timestamptz"
_TS_MAX = "'9999-12-31 23:59:59.999999+00'::timestamptz"

# --- the fast lane: lines COPY can convert without any chance of an error -----------------
_FAST_INT = rb"(?:0|-?[1-9][0-9]{0,8})"  # 9 digits always fit an int4
_FAST_TEXT = rb'[^,"\n\r\x00]*[^,"\n\r\x00 \t\f\v][^,"\n\r\x00]*'  # not blank, no quoting
# Days that exist in every year (February 29 takes the slow lane, which knows leap years).
_FAST_DAY = (
    rb"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    rb"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
)
# Years 0001 and 9999 could leave the representable range once an offset applies: slow lane.
_FAST_DATETIME = (
    rb"(?!0000|0001|9999)[0-9]{4}-" + _FAST_DAY + rb"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    rb"(?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])?"
)
_FAST = {"int": _FAST_INT, "text": _FAST_TEXT, "datetime": _FAST_DATETIME}


@cache
def fast_lines(spec: TableSpec) -> re.Pattern[bytes]:
    """A regex matching a run of lines that are valid for ``spec`` apart from keys."""
    line = b",".join(_FAST[column.kind] for column in spec.columns) + b"\r?\n"
    return re.compile(b"(?:" + line + b")+")


def _lit(value: str) -> str:
    """A SQL string literal of one of our own constant texts (standard_conforming_strings)."""
    return "'" + value.replace("'", "''") + "'"


_ISO_RE = _lit("^" + r.DATETIME_PATTERN + "$")
_INT_RE = _lit("^(" + r.INT_PATTERN + ")$")


def _datetime_valid(x: str) -> str:
    """SQL: is text ``x`` an ISO date-time we accept? Never raises, whatever ``x`` holds."""
    year = f"left({x}, 4)::int"
    day_max = (
        f"CASE substr({x}, 6, 2) WHEN '02' THEN CASE WHEN ({year} % 4 = 0 AND {year} % 100 <> 0) "
        f"OR {year} % 400 = 0 THEN 29 ELSE 28 END "
        "WHEN '04' THEN 30 WHEN '06' THEN 30 WHEN '09' THEN 30 WHEN '11' THEN 30 ELSE 31 END"
    )
    # The regex pins every range but the day of the month and year 0. AND inside a CASE
    # condition evaluates left to right, so the casts only ever see digits.
    return (
        f"{x} ~ {_ISO_RE} AND left({x}, 4) <> '0000' "
        f"AND (substr({x}, 9, 2) <= '28' OR substr({x}, 9, 2)::int <= {day_max})"
    )


def _typed(column: r.Column, x: str) -> str:
    """SQL: the typed value of raw field ``x``, NULL when invalid; never raises."""
    if column.kind == "int":
        return (
            f"CASE WHEN {x} ~ {_INT_RE} AND length({x}) <= 11 THEN CASE WHEN {x}::int8 "
            f"BETWEEN {r.INT32_MIN} AND {r.INT32_MAX} THEN {x}::int4 END END"
        )
    if column.kind == "datetime":
        return (
            f"CASE WHEN {_datetime_valid(x)} THEN CASE WHEN {x}::timestamptz "
            f"BETWEEN {_TS_MIN} AND {_TS_MAX} THEN {x}::timestamptz END END"
        )
    return f"CASE WHEN btrim({x}, {_WS}) <> '' THEN {x} END"


def _column_error(index: int, column: r.Column) -> str:
    """SQL: why column ``index`` of a rejected row fails (NULL when it does not)."""
    x, v, name = f"t.f[{index}]", f"t.v{index}", column.name
    branches = [f"WHEN btrim({x}, {_WS}) = '' THEN {_lit(r.is_empty(name))}"]
    if column.kind == "int":
        branches.append(
            f"WHEN {v} IS NULL THEN CASE WHEN {x} ~ {_INT_RE} "
            f"THEN {_lit(r.out_of_range(name))} ELSE {_lit(r.not_integer(name))} END"
        )
    elif column.kind == "datetime":
        branches.append(f"WHEN {v} IS NULL THEN {_lit(r.not_datetime(name))}")
    if column.references:
        before, after = r.missing_reference(name, 0).split(" 0 ")
        branches.append(
            f"WHEN ref{index}.id IS NULL THEN {_lit(before + ' ')} || {v} || {_lit(' ' + after)}"
        )
    return "CASE " + " ".join(branches) + " END"


def stage_ddl(spec: TableSpec) -> str:
    """The TEMP staging table: line number, the typed columns, and ``raw`` for other lines."""
    typed = ", ".join(f"v{i} {_SQL_TYPES[column.kind]}" for i, column in enumerate(spec.columns, 1))
    return (
        f"CREATE TEMP TABLE {STAGE} (n int8 GENERATED ALWAYS AS IDENTITY, {typed}, "
        'raw text COLLATE "C") ON COMMIT DROP'
    )


@cache
def ingest_sql(spec: TableSpec, *, update: bool, find_duplicates: bool) -> str:
    """The one statement that checks the staged rows, inserts the valid ones, locks the rows
    they reference and returns the counts (first row, ``n`` NULL; ``gone``: referenced rows
    deleted meanwhile) and the first ``$1`` rejects with their reasons.

    With ``find_duplicates=False`` a duplicate id makes the statement raise (primary key).
    """
    k = len(spec.columns)
    vs = ", ".join(f"v{i}" for i in range(1, k + 1))
    quoted = (
        "ARRAY(SELECT CASE WHEN left(m[1], 1) = '\"' "
        "THEN replace(substr(m[1], 2, length(m[1]) - 2), '\"\"', '\"') ELSE m[1] END "
        f"FROM regexp_matches(',' || raw, {_lit(r.QUOTED_FIELD_PATTERN)}, 'g') "
        "WITH ORDINALITY AS q(m, i) ORDER BY i)"
    )
    split = (
        "CASE WHEN raw IS NULL THEN NULL "
        "WHEN strpos(raw, '\"') = 0 THEN string_to_array(raw, ',') "
        f"WHEN (',' || raw) ~ {_lit('^' + r.QUOTED_LINE_PATTERN + '$')} THEN {quoted} END"
    )
    typed_raw = ", ".join(
        f"CASE WHEN nf = {k} THEN {_typed(c, f'f[{i}]')} END" for i, c in enumerate(spec.columns, 1)
    )
    # Fast-lane rows arrive typed and valid; raw lines (v1 NULL) are split and checked here.
    # OFFSET 0 keeps a layer its own plan node, so ``f`` is computed once per line instead of
    # at every reference the planner would otherwise inline.
    typed = (
        f"SELECT n, false AS bad_text, NULL::text[] AS f, {k} AS nf, {vs} "
        f"FROM {STAGE} WHERE v1 IS NOT NULL "
        f"UNION ALL SELECT n, bad_text, f, nf, {typed_raw} FROM ("
        f"SELECT n, raw IS NULL AS bad_text, f, cardinality(f) AS nf FROM ("
        f"SELECT n, raw, {split} AS f FROM {STAGE} "
        "WHERE v1 IS NULL AND (raw IS NULL OR raw <> '') OFFSET 0) s) p"
    )
    joins = "".join(
        f" LEFT JOIN {c.references} ref{i} ON ref{i}.id = t.v{i}"
        for i, c in enumerate(spec.columns, 1)
        if c.references
    )
    valid = " AND ".join(
        [f"NOT t.bad_text AND t.nf = {k}"]
        + [f"t.v{i} IS NOT NULL" for i in range(1, k + 1)]
        + [f"ref{i}.id IS NOT NULL" for i, c in enumerate(spec.columns, 1) if c.references]
    )
    column_errors = ", ".join(_column_error(i, c) for i, c in enumerate(spec.columns, 1))
    reasons = (
        f"CASE WHEN t.bad_text THEN ARRAY[{_lit(r.BAD_TEXT)}] "
        f"WHEN t.nf IS NULL THEN ARRAY[{_lit(r.BAD_QUOTING)}] "
        f"WHEN t.nf <> {k} THEN ARRAY[{_lit(f'expected {k} fields, got ')} || t.nf] "
        f"ELSE array_remove(ARRAY[{column_errors}], NULL) END"
    )
    base = f"SELECT coalesce({valid}, false) AS pre_ok, t.n, " + ", ".join(
        f"t.v{i}" for i in range(1, k + 1)
    )
    if not find_duplicates:
        # ``reasons`` is inlined into the CASE, so only rejected rows ever build it.
        checked = (
            f"SELECT pre_ok AS ok, n, {vs}, CASE WHEN NOT pre_ok THEN reasons END AS errors "
            f"FROM ({base}, {reasons} AS reasons FROM ({typed}) t{joins}) c"
        )
    else:
        existing = "" if update else f" LEFT JOIN {spec.name} ex ON ex.id = t.v1"
        in_table = "false" if update else "ex.id IS NOT NULL"
        duplicate = _lit("duplicate id ")
        # A rejected row does not claim its id: the first *valid* row with an id wins.
        checked = (
            f"SELECT pre_ok AND NOT in_table AND first_n = n AS ok, n, {vs}, "
            "CASE WHEN NOT pre_ok THEN reasons "
            f"WHEN in_table THEN ARRAY[{duplicate} || v1 || {_lit(': already exists')}] "
            f"WHEN first_n <> n THEN ARRAY[{duplicate} || v1 || "
            f"{_lit(': repeated in this file (first at index ')} || (first_n - 1) || ')'] END "
            "AS errors FROM (SELECT *, min(n) FILTER (WHERE pre_ok) OVER (PARTITION BY v1) "
            f"AS first_n FROM ({base}, {in_table} AS in_table, {reasons} AS reasons "
            f"FROM ({typed}) t{joins}{existing}) c0) c"
        )
    conflict = ""
    if update:
        sets = ", ".join(f"{name} = EXCLUDED.{name}" for name in spec.column_names[1:])
        conflict = f" ON CONFLICT (id) DO UPDATE SET {sets}"
    # Each referenced row the stored rows name, locked once; "gone" counts those that vanished
    # between the join's snapshot and the lock (the load must then roll back).
    locks = "".join(
        f", seen{i} AS MATERIALIZED (SELECT DISTINCT v{i} AS id FROM checked WHERE ok), "
        f"lock{i} AS MATERIALIZED (SELECT id FROM {c.references} "
        f"WHERE id IN (SELECT id FROM seen{i}) FOR KEY SHARE)"
        for i, c in enumerate(spec.columns, 1)
        if c.references
    )
    gone = " + ".join(
        f"(SELECT count(*) FROM seen{i}) - (SELECT count(*) FROM lock{i})"
        for i, c in enumerate(spec.columns, 1)
        if c.references
    )
    return (
        f"WITH checked AS MATERIALIZED ({checked}){locks}, "
        f"ins AS (INSERT INTO {spec.name} ({', '.join(spec.column_names)}) "
        f"SELECT {vs} FROM checked WHERE ok{conflict}) "
        "SELECT NULL::int8 AS n, NULL::text[] AS errors, count(*) AS received, "
        f"count(*) FILTER (WHERE NOT ok) AS rejected, {gone or '0'} AS gone FROM checked "
        "UNION ALL (SELECT n, errors, NULL, NULL, NULL FROM checked WHERE NOT ok "
        "ORDER BY n LIMIT $1)"
    )


def copy_csv(pieces: Iterable[tuple[Kind, bytes]], columns: int) -> bytes:
    """Records as ``COPY … (FORMAT csv)`` input for the typed staging table.

    Runs of lines the fast regex matched (valid for the typed columns, so COPY cannot fail on
    them) pass through with an empty last field appended (``raw`` = NULL). Every other record
    becomes ``columns`` empty (NULL) fields plus the record, quoted, in ``raw`` for SQL to
    examine (COPY keeps line breaks inside quotes); a record that is not UTF-8 text or holds a
    NUL byte (PostgreSQL stores neither) becomes all NULLs.
    """
    empty = b"," * columns
    out: list[bytes] = []
    for kind, data in pieces:
        if kind == LINES:
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            out.append(data.replace(b"\n", b",\n"))
        elif kind == RECORD:
            out.append(empty + b'"' + data.replace(b'"', b'""') + b'"\n')
        else:
            out.append(empty + b"\n")
    return b"".join(out)


async def _copy_source(spec: TableSpec, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    columns = len(spec.columns)
    async for pieces in record_blocks(source, fast_lines(spec)):
        if data := copy_csv(pieces, columns):
            yield data


async def ingest_csv(
    connection: AsyncConnection,
    spec: TableSpec,
    source: AsyncIterable[bytes],
    *,
    update: bool,
    reject_cap: int,
    skip_triggers: Callable[[Any], Awaitable[bool]],
) -> IngestResult:
    """Load one CSV stream into ``spec``'s table inside the connection's transaction.

    ``skip_triggers(raw)`` turns the foreign-key triggers off for the rest of the current
    savepoint if the role may, and says whether it did (see the module's step 3).
    """
    import asyncpg

    # Bulk loads outlive the API's statement timeout; their size bounds them instead.
    await connection.execute(text("SET LOCAL statement_timeout = 0"))
    # Zone-less date-times are UTC (COPY converts them with the session's zone).
    await connection.execute(text("SET LOCAL TimeZone = 'UTC'"))
    # JIT compiling these wide expressions costs more (~0.6 s) than it saves on 1M rows.
    await connection.execute(text("SET LOCAL jit = off"))
    raw: Any = (await connection.get_raw_connection()).driver_connection
    await raw.execute(stage_ddl(spec))
    await raw.copy_to_table(
        STAGE,
        source=_copy_source(spec, source),
        columns=[*(f"v{i}" for i in range(1, len(spec.columns) + 1)), "raw"],
        format="csv",
    )
    gone = ReferenceGone(
        f"referenced rows kept being deleted while {spec.name} loaded; nothing was stored, retry"
    )
    has_references = any(column.references for column in spec.columns)
    await raw.execute("SAVEPOINT hr_ingest")
    find_duplicates = skipping = False
    attempts = 0
    while True:
        attempts += 1
        # Rolling back to the savepoint undoes the SET LOCAL too: set it for every attempt.
        skipping = has_references and await skip_triggers(raw)
        try:
            records = await raw.fetch(
                ingest_sql(spec, update=update, find_duplicates=find_duplicates), reject_cap
            )
            if not next(record for record in records if record["n"] is None)["gone"]:
                break
            # A department or job was deleted after the join saw it: run again, and the
            # rows naming it are rejected like any row naming a missing one.
        except (asyncpg.UniqueViolationError, asyncpg.CardinalityViolationError) as exc:
            if find_duplicates:
                raise ConcurrentWrite(
                    f"another transaction is writing the same {spec.name} ids; nothing was "
                    "stored, retry"
                ) from exc
            find_duplicates = True  # duplicate ids, in the table or within the file
        except asyncpg.ForeignKeyViolationError as exc:  # the triggers saw such a delete
            if attempts >= ATTEMPTS:
                raise gone from exc
        await raw.execute("ROLLBACK TO SAVEPOINT hr_ingest")
        if attempts >= ATTEMPTS:
            raise gone
    if skipping:  # later statements of the transaction fire their triggers again
        await raw.execute("SET LOCAL session_replication_role = origin")
    await raw.execute(f"RELEASE SAVEPOINT hr_ingest; DROP TABLE {STAGE}")
    received = rejected_count = 0
    rejected: list[Rejected] = []
    for record in records:
        if record["n"] is None:
            received, rejected_count = record["received"], record["rejected"]
        else:
            rejected.append(Rejected(index=record["n"] - 1, errors=list(record["errors"])))
    rejected.sort(key=lambda item: item.index)
    return IngestResult(
        table=spec.name,
        received=received,
        inserted=received - rejected_count,
        rejected=rejected,
        rejected_count=rejected_count,
    )
