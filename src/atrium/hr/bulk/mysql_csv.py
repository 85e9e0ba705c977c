# ruff: noqa: S608  (SQL here is assembled from our own table specs; values travel as data)
"""MariaDB/MySQL CSV ingest: stream the file into ``LOAD DATA LOCAL INFILE``, straight into
the table, and fall back to a staging table only when keys object.

Design, chosen by measurement on 1M rows (``bench/hr.py``; figures in docs/performance.md):

1. The records of :func:`atrium.hr.csvstream.record_blocks` become ``LOAD DATA`` input as
   they arrive, and the upload streams to the server over the connection the request already
   holds (:func:`load_local`): no temporary file on the database's side, memory flat. A
   compiled regex passes whole runs of clean lines unchanged (plain integers, non-blank
   unquoted text that is not the word ``NULL``, an ISO date-time in UTC); the server's own
   parser converts them. Every other record is checked in Python with the rules every engine
   shares (:mod:`atrium.hr.rows`): a valid one is written out again in the one form the
   server reads exactly (quoted text, a UTC date-time), a rejected one is counted with its
   reasons and left out. So the server only ever sees valid values; only keys can object.
2. First attempt, in a savepoint: ``LOAD DATA … IGNORE INTO`` the table itself, which is as
   fast as the ``mariadb`` client loading the same file. Then the references are checked
   for the whole load at once: the distinct departments and jobs the table now names (an
   index scan per key, not a pass over the rows) are locked with ``LOCK IN SHARE MODE``, the
   lock InnoDB's own foreign-key check takes per row, so a concurrent DELETE waits for our
   commit and then fails on the key. On MariaDB the per-row foreign-key checks are then
   redundant and ``SET STATEMENT foreign_key_checks = 0`` skips them for that one statement
   (~15 % of the load's time; the session's setting never changes). Any warning (a
   duplicate id, in the table or in the file) or a missing reference rolls the attempt back.
3. Then (and for ``?on_conflict=update``, which must still reject ids repeated in the file)
   the valid rows, kept in a temporary spool file during the first pass, are loaded into a
   TEMPORARY staging table, and one statement finds, set-based, the rows whose keys refuse
   them with the same reasons as PostgreSQL: a missing department or job, an id that exists,
   an id an earlier valid row of the file took. The rest are inserted in one statement.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import datetime
from functools import cache
from typing import IO, Any

from atrium.hr import rows as r
from atrium.hr.bulk.base import references
from atrium.hr.csvstream import LINES, NOT_TEXT, Kind, record_blocks
from atrium.hr.rows import Row, TableSpec
from atrium.hr.summary import Rejected

LOCAL_NAME = "atrium-hr-upload"  # the "file" name the server asks our client for
PACKET_BYTES = 1 << 20  # LOAD DATA data packets (the protocol allows up to 16 MiB)
STAGE, CHECKED = "hr_stage", "hr_checked"
_SQL_TYPES = {"int": "INT", "text": "LONGTEXT", "datetime": "DATETIME(6)"}

# --- the fast lane: lines the server converts exactly --------------------------------------
_FAST_INT = rb"(?:0|-?[1-9][0-9]{0,8})"  # 9 digits always fit an INT
# Not blank, no quoting, and not the bare word NULL (which LOAD DATA reads as NULL).
_FAST_TEXT = rb'(?!NULL[,\r\n])[^,"\n\r\x00]*[^,"\n\r\x00 \t\f\v][^,"\n\r\x00]*'
_FAST_DAY = (
    rb"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    rb"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
)
# UTC only ("Z" or no zone): the server stores it as it is. Offsets take the Python lane.
_FAST_DATETIME = (
    rb"(?!0000)[0-9]{4}-" + _FAST_DAY + rb"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    rb"(?:\.[0-9]{1,6})?Z?"
)
_FAST = {"int": _FAST_INT, "text": _FAST_TEXT, "datetime": _FAST_DATETIME}


@cache
def fast_lines(spec: TableSpec) -> re.Pattern[bytes]:
    """A regex matching a run of lines that are valid for ``spec`` apart from keys."""
    line = b",".join(_FAST[column.kind] for column in spec.columns) + b"\r?\n"
    return re.compile(b"(?:" + line + b")+")


@cache
def load_sql(spec: TableSpec, table: str, *, ignore: bool, prefix: str) -> str:
    """``LOAD DATA LOCAL`` of our stream into ``table`` (the target, or the staging table
    whose columns are v1…vk); a trailing ``Z`` of a date-time is dropped by the server."""
    k = len(spec.columns)
    names = spec.column_names if table == spec.name else tuple(f"v{i}" for i in range(1, k + 1))
    targets = [f"@c{i}" if c.kind == "datetime" else names[i] for i, c in enumerate(spec.columns)]
    sets = [
        f"{names[i]} = TRIM(TRAILING 'Z' FROM @c{i})"
        for i, c in enumerate(spec.columns)
        if c.kind == "datetime"
    ]
    return (
        f"{prefix}LOAD DATA LOCAL INFILE '{LOCAL_NAME}' {'IGNORE ' if ignore else ''}"
        f"INTO TABLE {table} CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' "
        "OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
        f"({', '.join(targets)})" + (f" SET {', '.join(sets)}" if sets else "")
    )


def stage_ddl(spec: TableSpec) -> str:
    """The TEMPORARY staging table: record number, then the typed columns (NULL for records
    that were rejected already, or blank)."""
    typed = ", ".join(f"v{i} {_SQL_TYPES[c.kind]}" for i, c in enumerate(spec.columns, 1))
    return (
        f"CREATE TEMPORARY TABLE {STAGE} (n BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
        f"{typed}) ENGINE=InnoDB"
    )


def check_ddl(spec: TableSpec, *, update: bool) -> str:
    """Stage rows with the flags that decide them: which references are missing, whether
    the id exists, and the first row of the file whose references exist with the same id."""
    k = len(spec.columns)
    refs = references(spec)
    vs = ", ".join(f"s.v{i}" for i in range(1, k + 1))
    joins = "".join(f" LEFT JOIN {target} r{p} ON r{p}.id = s.v{p + 1}" for p, _, target in refs)
    missing = "".join(f", r{p}.id IS NULL AS miss{p}" for p, _, _ in refs)
    refs_ok = " AND ".join(f"r{p}.id IS NOT NULL" for p, _, _ in refs) or "TRUE"
    taken = "FALSE" if update else "e.id IS NOT NULL"
    existing = "" if update else f" LEFT JOIN {spec.name} e ON e.id = s.v1"
    return (
        f"CREATE TEMPORARY TABLE {CHECKED} ENGINE=InnoDB AS SELECT c.*, "
        "(c.refs_ok AND NOT c.taken AND c.first_n = c.n) AS ok FROM ("
        f"SELECT s.n, {vs}{missing}, ({refs_ok}) AS refs_ok, ({taken}) AS taken, "
        f"MIN(CASE WHEN {refs_ok} THEN s.n END) OVER (PARTITION BY s.v1) AS first_n "
        f"FROM {STAGE} s{joins}{existing} WHERE s.v1 IS NOT NULL) c"
    )


def key_reasons(spec: TableSpec, row: Any) -> list[str]:
    """The reasons of a staged row the keys refused (a row of ``check_ddl``'s table)."""
    missing = [
        r.missing_reference(name, row[f"v{p + 1}"])
        for p, name, _ in references(spec)
        if row[f"miss{p}"]
    ]
    if missing:
        return missing
    if row["taken"]:
        return [r.duplicate_existing(row["v1"])]
    return [r.duplicate_in_upload(row["v1"], row["first_n"] - 1, "file")]


# --- turning records into LOAD DATA input ---------------------------------------------------


def canonical(spec: TableSpec, row: Row) -> bytes:
    """A valid row in the one form the server reads exactly."""
    fields = []
    for column, value in zip(spec.columns, row, strict=True):
        if isinstance(value, datetime):
            fields.append(value.strftime("%Y-%m-%d %H:%M:%S.%f"))
        elif column.kind == "text":
            fields.append('"' + str(value).replace('"', '""') + '"')
        else:
            fields.append(str(value))
    return (",".join(fields) + "\n").encode()


class Converter:
    """Turns one upload's records into LOAD DATA input, checking what the fast lane cannot.

    The input goes two ways: :meth:`convert` returns what the first attempt loads, and
    writes to ``spool`` the same rows plus a line of NULLs for every record left out, so a
    staging table's AUTO_INCREMENT numbers the spool's lines exactly as the records.
    """

    def __init__(self, spec: TableSpec, spool: IO[bytes], reject_cap: int) -> None:
        self.spec, self.spool, self.reject_cap = spec, spool, reject_cap
        self.fast = fast_lines(spec)
        self.placeholder = (",".join(["NULL"] * len(spec.columns)) + "\n").encode()
        self.index = -1
        self.received = self.rows = 0
        self.rejected: list[Rejected] = []
        self.rejected_count = 0

    def _reject(self, errors: list[str]) -> None:
        self.rejected_count += 1
        if len(self.rejected) < self.reject_cap:  # records come in order: the first ones
            self.rejected.append(Rejected(self.index, errors))

    def convert(self, pieces: Iterable[tuple[Kind, bytes]]) -> bytes:
        """LOAD DATA input for one block of records (and the spool's copy of it)."""
        out: list[bytes] = []
        spool: list[bytes] = []
        for kind, data in pieces:
            if kind == LINES:
                if b"\r" in data:
                    data = data.replace(b"\r\n", b"\n")
                lines = data.count(b"\n")
                self.index += lines
                self.received += lines
                self.rows += lines
                out.append(data)
                spool.append(data)
                continue
            self.index += 1
            row: Row | None = None
            if kind == NOT_TEXT:
                self.received += 1
                self._reject([r.BAD_TEXT])
            elif data:  # blank lines are not records
                self.received += 1
                fields = r.split_line(data.decode("utf-8"))
                if fields is None:
                    self._reject([r.BAD_QUOTING])
                else:
                    row, errors = r.check_fields(self.spec, fields)
                    if row is None:
                        self._reject(errors)
            if row is None:
                spool.append(self.placeholder)
            else:
                line = canonical(self.spec, row)
                self.rows += 1
                out.append(line)
                spool.append(line)
        self.spool.write(b"".join(spool))
        return b"".join(out)


async def converted(converter: Converter, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The upload as LOAD DATA input, a block at a time."""
    async for pieces in record_blocks(source, converter.fast):
        if data := converter.convert(pieces):
            yield data


async def spooled(spool: IO[bytes]) -> AsyncIterator[bytes]:
    """The spool's bytes from its start, read in a worker thread."""
    await asyncio.to_thread(spool.seek, 0)
    while data := await asyncio.to_thread(spool.read, 1 << 20):
        yield data


def new_spool() -> IO[bytes]:
    """A private temporary file (deleted when closed), for the rows of one upload."""
    return tempfile.TemporaryFile(prefix="atrium-hr-")


# --- LOAD DATA LOCAL from an async stream -----------------------------------------------------


async def load_local(raw: Any, sql: str, data: AsyncIterable[bytes]) -> tuple[int, int]:
    """Run ``sql`` (a ``LOAD DATA LOCAL INFILE``) on asyncmy connection ``raw``, answering
    the server's request for the file with ``data``; (rows affected, warnings).

    asyncmy would open a file of that name; we answer the same protocol exchange from the
    stream instead (data packets, then an empty one), so nothing touches the disk and the
    upload flows to the server while it arrives. Should ``data`` fail midway, the empty
    packet still ends the exchange (the caller's transaction then rolls the rows back).
    """
    from asyncmy import connection as asyncmy_connection
    from asyncmy.constants import COMMAND

    result_class: Any = asyncmy_connection.MySQLResult

    class _Streamed(result_class):  # type: ignore[misc]
        async def _read_load_local_packet(self, first_packet: Any) -> None:
            connection = self.connection
            failure: BaseException | None = None
            try:
                async for chunk in data:
                    with memoryview(chunk) as view:
                        for start in range(0, len(view), PACKET_BYTES):
                            connection.write_packet(bytes(view[start : start + PACKET_BYTES]))
                    await connection._proto.drain()
            except BaseException as exc:
                failure = exc
            connection.write_packet(b"")
            await connection._proto.drain()
            answer = await connection.read_packet()  # raises on an error packet
            if failure is not None:
                raise failure
            self._read_ok_packet(answer)

    await raw._execute_command(COMMAND.COM_QUERY, sql)
    result: Any = _Streamed(raw)
    await result.read()
    raw._result = result
    return int(result.affected_rows or 0), int(result.warning_count)


__all__ = [
    "CHECKED",
    "STAGE",
    "Converter",
    "canonical",
    "check_ddl",
    "converted",
    "fast_lines",
    "key_reasons",
    "load_local",
    "load_sql",
    "new_spool",
    "spooled",
    "stage_ddl",
]
