"""Statement seams: one place per kind of SQL that PostgreSQL, SQLite and MySQL/MariaDB spell
differently, so services read the same on every engine.

Each seam is a SQLAlchemy construct compiled per dialect (the engine's dialect picks the
spelling when the statement is compiled, once per statement shape) or, where an engine lacks a
feature, a helper that runs the portable equivalent in the caller's transaction. Adding an
engine means adding its ``@compiles`` variant or capability here; no service changes.

=================  ==========================  ==========================  ===================
seam               PostgreSQL                  SQLite                      MySQL / MariaDB
=================  ==========================  ==========================  ===================
upsert             ON CONFLICT DO UPDATE       ON CONFLICT DO UPDATE       ON DUPLICATE KEY
insert_ignore      ON CONFLICT DO NOTHING      ON CONFLICT DO NOTHING      INSERT IGNORE
code_point_order   COLLATE "C"                 (BINARY already)            COLLATE …_bin
count_where        count(*) FILTER (WHERE …)   count(*) FILTER (WHERE …)   count(CASE WHEN …)
next_timestamp     greatest(clock_timestamp…)  strftime(… julianday …)     GREATEST(UTC_TIME…)
update_returning   UPDATE … RETURNING          UPDATE … RETURNING          UPDATE; SELECT
insert_returning   INSERT … RETURNING          INSERT … RETURNING          RETURNING (MariaDB)
                                                                           or INSERT; SELECT
claim              UPDATE … WHERE id IN        same (one writer at a       SELECT … FOR UPDATE
                   (SELECT … SKIP LOCKED)      time)                       SKIP LOCKED; UPDATE
                   RETURNING                                               ; SELECT
=================  ==========================  ==========================  ===================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, Row, Select, Table, insert, select
from sqlalchemy.dialects.mysql.dml import OnDuplicateClause
from sqlalchemy.dialects.postgresql import dml as pg_dml
from sqlalchemy.dialects.sqlite import dml as sqlite_dml
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Insert, Update, alias
from sqlalchemy.sql.base import SyntaxExtension
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from atrium.platform.sqltypes import binary_collation

_MYSQL = ("mysql", "mariadb")

# A result row of any width.
AnyRow = Row[*tuple[Any, ...]]


def dialect_of(session: AsyncSession) -> Dialect:
    """The dialect a session talks to (for capability flags, never for name tests)."""
    return session.get_bind().dialect


# --- upsert / insert-ignore ---------------------------------------------------------------


class _OnConflict(SyntaxExtension, ClauseElement):
    """The tail of an INSERT that decides what a key conflict does (see ``upsert``)."""

    __visit_name__ = "atrium_on_conflict"
    _traverse_internals = [
        ("keys", InternalTraversal.dp_string_list),
        ("columns", InternalTraversal.dp_string_list),
    ]

    def __init__(self, keys: Sequence[str], columns: Sequence[str]) -> None:
        self.keys = list(keys)
        self.columns = list(columns)  # empty: leave the existing row alone

    def apply_to_insert(self, insert_stmt: Insert) -> None:
        """Sit where the dialects put ON CONFLICT / ON DUPLICATE KEY."""
        insert_stmt.apply_syntax_extension_point(self.append_replacing_same_type, "post_values")


def _conflict_table(compiler: SQLCompiler) -> Table:
    statement: Any = compiler.stack[-1]["selectable"]
    table: Table = statement.table
    return table


def _on_conflict(module: Any, element: _OnConflict, compiler: SQLCompiler, **kw: Any) -> str:
    # The dialect's own ON CONFLICT element does the rendering (and its quirks).
    if not element.columns:
        return compiler.process(module.OnConflictDoNothing(index_elements=element.keys), **kw)
    excluded = alias(_conflict_table(compiler), name="excluded")
    clause = module.OnConflictDoUpdate(
        index_elements=element.keys, set_={c: excluded.c[c] for c in element.columns}
    )
    return compiler.process(clause, **kw)


@compiles(_OnConflict, "postgresql")
def _on_conflict_pg(element: _OnConflict, compiler: SQLCompiler, **kw: Any) -> str:
    return _on_conflict(pg_dml, element, compiler, **kw)


@compiles(_OnConflict, "sqlite")
def _on_conflict_sqlite(element: _OnConflict, compiler: SQLCompiler, **kw: Any) -> str:
    return _on_conflict(sqlite_dml, element, compiler, **kw)


@compiles(_OnConflict, "mysql")
@compiles(_OnConflict, "mariadb")
def _on_conflict_mysql(element: _OnConflict, compiler: SQLCompiler, **kw: Any) -> str:
    if not element.columns:
        return ""  # the IGNORE prefix that insert_ignore() adds does it
    inserted = alias(_conflict_table(compiler), name="inserted")
    clause = OnDuplicateClause(inserted, {c: inserted.c[c] for c in element.columns})
    return compiler.process(clause, **kw)


def _names(columns: Iterable[str | ColumnElement[Any]]) -> list[str]:
    names = [c if isinstance(c, str) else getattr(c, "key", None) for c in columns]
    if not all(isinstance(n, str) for n in names):
        raise TypeError("keys and update columns must be column names or table columns")
    return cast(list[str], names)


def upsert(
    table: Any,
    *,
    keys: Iterable[str | ColumnElement[Any]],
    update: Iterable[str | ColumnElement[Any]],
) -> Insert:
    """INSERT that, where a row with the same ``keys`` exists, overwrites its ``update`` columns.

    MySQL's ON DUPLICATE KEY reacts to any unique key, not just ``keys``: use it on tables
    where ``keys`` is the only unique key besides a generated primary key.
    """
    columns = _names(update)
    if not columns:
        raise ValueError("upsert needs at least one column to update; see insert_ignore")
    return insert(table).ext(_OnConflict(_names(keys), columns))


def insert_ignore(table: Any, *, keys: Iterable[str | ColumnElement[Any]]) -> Insert:
    """INSERT that skips rows whose ``keys`` already exist; ``rowcount`` counts the new rows.

    On MySQL this is INSERT IGNORE, which also turns other errors of the statement (an
    over-long value, a missing foreign key) into warnings: callers validate values first, as
    they must for PostgreSQL's sake anyway.
    """
    statement = insert(table)
    for name in _MYSQL:
        statement = statement.prefix_with("IGNORE", dialect=name)
    return statement.ext(_OnConflict(_names(keys), ()))


# --- ordering and time --------------------------------------------------------------------


class code_point_order(FunctionElement[str]):  # noqa: N801 (reads like SQL)
    """``column`` for ORDER BY so that strings sort by Unicode code point on every engine."""

    inherit_cache = True
    name = "code_point_order"

    def __init__(self, column: ColumnElement[str] | Any) -> None:
        super().__init__(column)

    @property
    def column(self) -> ColumnElement[str]:
        """The ordered column."""
        clause: ColumnElement[str] = next(iter(self.clauses))
        return clause


@compiles(code_point_order)
def _code_point_order(element: code_point_order, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)  # SQLite's BINARY: byte = code point order


@compiles(code_point_order, "postgresql")
def _code_point_order_pg(element: code_point_order, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.column, **kw)} COLLATE "C"'


@compiles(code_point_order, "mysql")
@compiles(code_point_order, "mariadb")
def _code_point_order_mysql(element: code_point_order, compiler: SQLCompiler, **kw: Any) -> str:
    collation = binary_collation(compiler.dialect)
    return f"{compiler.process(element.column, **kw)} COLLATE {collation}"


class next_timestamp(FunctionElement[datetime]):  # noqa: N801
    """Now, but strictly after ``column``'s current value (a version that always moves)."""

    inherit_cache = True
    name = "next_timestamp"

    def __init__(self, column: ColumnElement[datetime] | Any) -> None:
        super().__init__(column)


def _column_of(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(next(iter(element.clauses)), **kw)


@compiles(next_timestamp, "postgresql")
def _next_timestamp_pg(element: next_timestamp, compiler: SQLCompiler, **kw: Any) -> str:
    column = _column_of(element, compiler, **kw)
    return f"greatest(clock_timestamp(), {column} + interval '1 microsecond')"


@compiles(next_timestamp, "sqlite")
def _next_timestamp_sqlite(element: next_timestamp, compiler: SQLCompiler, **kw: Any) -> str:
    # Milliseconds, in SQLAlchemy's SQLite text layout (see sqltypes.SQLITE_PRECISE_NOW).
    column = _column_of(element, compiler, **kw)
    return (
        f"(strftime('%Y-%m-%d %H:%M:%f', max(julianday('now'), julianday({column}) "
        "+ 1.0 / 86400000.0)) || '000')"
    )


@compiles(next_timestamp, "mysql")
@compiles(next_timestamp, "mariadb")
def _next_timestamp_mysql(element: next_timestamp, compiler: SQLCompiler, **kw: Any) -> str:
    column = _column_of(element, compiler, **kw)
    return f"GREATEST(UTC_TIMESTAMP(6), {column} + INTERVAL 1 MICROSECOND)"


class count_where(FunctionElement[int]):  # noqa: N801
    """``COUNT(*)`` of the rows of a group where ``condition`` holds (an aggregate FILTER)."""

    inherit_cache = True
    name = "count_where"
    type = Integer()

    def __init__(self, condition: ColumnElement[bool]) -> None:
        super().__init__(condition)


@compiles(count_where)
def _count_where(element: count_where, compiler: SQLCompiler, **kw: Any) -> str:
    return f"count(*) FILTER (WHERE {_column_of(element, compiler, **kw)})"


@compiles(count_where, "mysql")
@compiles(count_where, "mariadb")
def _count_where_mysql(element: count_where, compiler: SQLCompiler, **kw: Any) -> str:
    # No FILTER clause: COUNT skips the NULLs a CASE without ELSE gives.
    return f"count(CASE WHEN {_column_of(element, compiler, **kw)} THEN 1 END)"


# --- RETURNING where an engine has none ---------------------------------------------------


async def update_returning(
    session: AsyncSession,
    statement: Update,
    returning: Sequence[Any],
    *,
    reread: Sequence[ColumnElement[bool]],
) -> list[AnyRow]:
    """Run an UPDATE and return ``returning`` of the rows it matched, as they are now.

    With RETURNING where the engine has it; otherwise (MySQL, MariaDB) the rows are read back
    by ``reread`` (criteria that name exactly the updated rows, e.g. their key) inside the
    same transaction, which holds their locks, so nobody changed them in between.
    """
    if dialect_of(session).update_returning:
        return list((await session.execute(statement.returning(*returning))).all())
    result: Any = await session.execute(statement)
    if not result.rowcount:
        return []
    read = select(*returning).where(*reread).execution_options(populate_existing=True)
    return list((await session.execute(read)).all())


async def insert_returning(
    session: AsyncSession, table: Any, values: Mapping[str, Any], returning: Sequence[Any]
) -> AnyRow:
    """Insert one row and return ``returning`` of it (defaults the database filled included)."""
    statement = insert(table).values(**values)
    if dialect_of(session).insert_returning:
        return (await session.execute(statement.returning(*returning))).one()
    result: Any = await session.execute(statement)
    key = result.inserted_primary_key
    target: Table = statement.table  # type: ignore[assignment]
    where = [column == value for column, value in zip(target.primary_key, key, strict=True)]
    return (await session.execute(select(*returning).where(*where))).one()


async def claim(
    session: AsyncSession,
    table: Table,
    candidates: Select[Any],
    values: Mapping[str, Any],
    returning: Sequence[Any],
) -> list[AnyRow]:
    """Mark the rows ``candidates`` selects (their ids) with ``values``; rows others are
    claiming right now are skipped, not waited for. Returns ``returning`` of the claimed rows.

    ``candidates`` selects the table's single-column primary key, with its order and limit.
    """
    (key,) = table.primary_key.columns
    locked = candidates.with_for_update(skip_locked=True)
    if dialect_of(session).update_returning:
        statement = table.update().where(key.in_(locked)).values(**values)
        return list((await session.execute(statement.returning(*returning))).all())
    # MySQL cannot UPDATE a table filtered by a subquery on itself, nor return rows: lock
    # the candidates, then update and read exactly those (our transaction holds their locks).
    ids = list((await session.execute(locked)).scalars())
    if not ids:
        return []
    await session.execute(table.update().where(key.in_(ids)).values(**values))
    return list((await session.execute(select(*returning).where(key.in_(ids)))).all())


__all__ = [
    "claim",
    "code_point_order",
    "count_where",
    "dialect_of",
    "insert_ignore",
    "insert_returning",
    "next_timestamp",
    "update_returning",
    "upsert",
]
