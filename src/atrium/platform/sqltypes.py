"""Schema seams: column types, server defaults and table options that differ per engine.

Models and migrations use these instead of the bare SQLAlchemy types wherever an engine would
otherwise store something different (MySQL's ``DATETIME`` drops microseconds, its ``TEXT``
holds 64 KiB, its default collation ignores case and accents). Each is a ``with_variant`` or
a construct compiled per dialect, so a model or a migration reads the same for every engine
and adding an engine means adding its variant here. On PostgreSQL and SQLite every one of them
produces exactly the DDL the bare type did.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.compiler import DDLCompiler, SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

# SQLite only auto-increments an INTEGER PRIMARY KEY, never a BIGINT one.
BigIntPK: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

# Unbounded text as on PostgreSQL and SQLite (MySQL's TEXT stops at 65,535 bytes).
LongText: TypeEngine[str] = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

# Bytes of any size (MySQL's BLOB stops at 65,535 bytes).
LongBinary: TypeEngine[bytes] = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class UtcDateTime(TypeDecorator[datetime]):
    """An instant, always handed out as an aware UTC ``datetime``, microseconds kept.

    ``timestamptz`` on PostgreSQL; naive UTC text on SQLite; ``DATETIME(6)`` holding naive UTC
    on MySQL/MariaDB (their sessions run in UTC, see ``platform.db``). Naive values are
    refused: every instant Atrium stores knows its zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``DATETIME(6)`` on MySQL/MariaDB (plain ``DATETIME`` keeps whole seconds)."""
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """UTC; naive where the column has no zone (SQLite, MySQL)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Atrium stores only zone-aware instants")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Aware UTC whatever the engine returned."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- server-side defaults -----------------------------------------------------------------


class server_now(FunctionElement[datetime]):  # noqa: N801 (reads like the SQL function)
    """The database's current time as a column default.

    ``now()`` on PostgreSQL, ``CURRENT_TIMESTAMP`` on SQLite (whole seconds: the historical
    schema), ``CURRENT_TIMESTAMP(6)`` on MySQL/MariaDB (a ``DATETIME(6)`` default must name
    the same precision).
    """

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "server_now"


@compiles(server_now)
def _server_now(element: server_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP" if compiler.dialect.name == "sqlite" else "now()"


@compiles(server_now, "mysql")
@compiles(server_now, "mariadb")
def _server_now_mysql(element: server_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP(6)"


# SQLite's CURRENT_TIMESTAMP has whole seconds; this has milliseconds, written in the exact
# text layout SQLAlchemy uses for DateTime on SQLite (six fractional digits), so a timestamp
# read back and bound again compares equal (optimistic concurrency relies on it).
SQLITE_PRECISE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


class server_precise_now(FunctionElement[datetime]):  # noqa: N801
    """Like :class:`server_now`, with sub-second precision on SQLite too (templates)."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "server_precise_now"


@compiles(server_precise_now)
def _server_precise_now(element: server_precise_now, compiler: SQLCompiler, **kw: Any) -> str:
    return SQLITE_PRECISE_NOW if compiler.dialect.name == "sqlite" else "now()"


@compiles(server_precise_now, "mysql")
@compiles(server_precise_now, "mariadb")
def _server_precise_now_mysql(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP(6)"


class random_uuid(FunctionElement[str]):  # noqa: N801
    """A random UUID as a column default (for rows written outside Atrium's services)."""

    inherit_cache = True
    name = "random_uuid"


@compiles(random_uuid)
def _random_uuid(element: random_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    if compiler.dialect.name == "sqlite":
        return "(lower(hex(randomblob(16))))"
    return "gen_random_uuid()"


@compiles(random_uuid, "mysql")
@compiles(random_uuid, "mariadb")
def _random_uuid_mysql(element: random_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    # MariaDB 10.7+ stores Uuid natively and takes UUID()'s text; elsewhere it is the 32 hex
    # digits of CHAR(32).
    if getattr(compiler.dialect, "supports_native_uuid", False):
        return "uuid()"
    return "replace(uuid(),'-','')"


class empty_text(FunctionElement[str]):  # noqa: N801
    """``''`` as a text column's default (MySQL takes a TEXT default only as an expression)."""

    inherit_cache = True
    name = "empty_text"


@compiles(empty_text)
def _empty_text(element: empty_text, compiler: SQLCompiler, **kw: Any) -> str:
    return "''"


@compiles(empty_text, "mysql")
@compiles(empty_text, "mariadb")
def _empty_text_mysql(element: empty_text, compiler: SQLCompiler, **kw: Any) -> str:
    return "('')"


# --- table options ------------------------------------------------------------------------


def binary_collation(dialect: Dialect) -> str:
    """The utf8mb4 collation that compares like PostgreSQL's ``C`` and SQLite's BINARY.

    Code-point order, case- and accent-sensitive, and NO PAD ('a' and 'a ' differ): MariaDB
    calls it ``utf8mb4_nopad_bin``, MySQL 8 ``utf8mb4_0900_bin``.
    """
    return "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"


@compiles(CreateTable, "mysql")
@compiles(CreateTable, "mariadb")
def _create_table_mysql(element: CreateTable, compiler: DDLCompiler, **kw: Any) -> str:
    # Every table Atrium creates (its own and Alembic's) stores 4-byte UTF-8 and compares
    # strings by code point, whatever the server's or the database's defaults are.
    sql: str = compiler.visit_create_table(element, **kw)  # type: ignore[no-untyped-call]
    options = element.element.dialect_options["mysql"]
    if options.get("charset") or options.get("collate"):
        return sql
    collation = binary_collation(compiler.dialect)
    return f"{sql.rstrip()} ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}\n\n"


# --- triggers -----------------------------------------------------------------------------


def touch_trigger_ddl(dialect: Dialect, table: str, column: str, key: str) -> list[str]:
    """Statements that make every UPDATE of ``table`` move ``column`` strictly forward.

    Atrium's own UPDATEs set the column with ``sql.next_timestamp`` too (SQLite's trigger
    runs after the statement, too late for its RETURNING); the trigger covers every other
    write. On MySQL with binary logging (RDS, Aurora) creating a trigger needs
    ``log_bin_trust_function_creators=1`` (the Terraform module sets it).
    """
    if dialect.name in {"mysql", "mariadb"}:
        return [
            f"CREATE TRIGGER {table}_{column} BEFORE UPDATE ON {table}\n"  # noqa: S608
            f"FOR EACH ROW SET NEW.{column} = GREATEST(UTC_TIMESTAMP(6), "
            f"OLD.{column} + INTERVAL 1 MICROSECOND)"
        ]
    if dialect.name == "postgresql":
        return [
            f"CREATE FUNCTION {table}_touch_{column}() RETURNS trigger AS $$\n"
            "BEGIN\n"
            f"    NEW.{column} := greatest(clock_timestamp(), OLD.{column} "
            "+ interval '1 microsecond');\n"
            "    RETURN NEW;\n"
            "END;\n"
            "$$ LANGUAGE plpgsql",
            f"CREATE TRIGGER {table}_{column} BEFORE UPDATE ON {table}\n"
            f"FOR EACH ROW EXECUTE FUNCTION {table}_touch_{column}()",
        ]
    if dialect.name == "sqlite":
        # AFTER (SQLite has no BEFORE-update assignment); it skips updates that already set
        # the column themselves, as Atrium's do.
        following = (
            f"strftime('%Y-%m-%d %H:%M:%f', max(julianday('now'), julianday(OLD.{column}) "
            "+ 1.0 / 86400000.0)) || '000'"
        )
        return [
            f"CREATE TRIGGER {table}_{column} AFTER UPDATE ON {table}\n"  # noqa: S608
            f"FOR EACH ROW WHEN NEW.{column} IS OLD.{column}\n"
            "BEGIN\n"
            f"    UPDATE {table} SET {column} = {following} WHERE {key} = NEW.{key};\n"
            "END"
        ]
    raise NotImplementedError(f"no trigger DDL for {dialect.name}")


def drop_touch_trigger_ddl(dialect: Dialect, table: str, column: str) -> list[str]:
    """Undo :func:`touch_trigger_ddl`."""
    if dialect.name == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_{column} ON {table}",
            f"DROP FUNCTION IF EXISTS {table}_touch_{column}()",
        ]
    return [f"DROP TRIGGER IF EXISTS {table}_{column}"]
