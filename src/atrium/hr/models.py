"""Tables of the hr domain: departments, jobs and hired employees, keyed by the given ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from atrium.platform.db import Base


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite (no time zones) naive UTC, made aware on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store every instant as UTC (SQLite keeps it naive, PostgreSQL as timestamptz)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: HR timestamps must carry a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Always hand out aware UTC datetimes, whatever the backend returned."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Department(Base):
    """A department; ``id`` is the one the source files give, never generated."""

    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    department: Mapped[str] = mapped_column(Text)


class Job(Base):
    """A job title; ``id`` is the one the source files give."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    job: Mapped[str] = mapped_column(Text)


class HiredEmployee(Base):
    """One hire: who, when (UTC) and into which department and job."""

    __tablename__ = "hired_employees"

    # No secondary indexes on purpose: every index slows bulk ingest, and the reports scan the
    # year anyway. PostgreSQL does not need an index on the referencing side of a foreign key.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(Text)
    datetime: Mapped[datetime] = mapped_column(UTCDateTime())
    department_id: Mapped[int] = mapped_column(Integer, ForeignKey("departments.id"))
    job_id: Mapped[int] = mapped_column(Integer, ForeignKey("jobs.id"))
