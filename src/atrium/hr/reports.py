"""The two hiring reports, aggregated in SQL, identical on every engine.

Quarters are cut with UTC instant bounds (``datetime >= April 1st 00:00Z`` …) rather than with
``EXTRACT``/``strftime``, so one portable query serves every database and the timestamps are
compared, never converted. Names are ordered in Python after aggregation: Python compares
strings by code point, which no database collation promises.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.hr.models import Department, HiredEmployee, Job

QUARTER_COLUMNS = ("department", "job", "Q1", "Q2", "Q3", "Q4")
ABOVE_MEAN_COLUMNS = ("id", "department", "hired")


def _year_bounds(year: int) -> list[datetime]:
    return [datetime(year, month, 1, tzinfo=UTC) for month in (1, 4, 7, 10)] + [
        datetime(year + 1, 1, 1, tzinfo=UTC)
    ]


async def hires_by_quarter(session: AsyncSession, year: int) -> list[dict[str, Any]]:
    """Hires per department and job in each UTC quarter of ``year``, by department then job."""
    bounds = _year_bounds(year)
    when = HiredEmployee.datetime
    # COUNT(CASE …) rather than COUNT(*) FILTER (…), which MariaDB/MySQL lack.
    quarters = [
        func.count(case((and_(when >= bounds[q], when < bounds[q + 1]), 1))).label(f"Q{q + 1}")
        for q in range(4)
    ]
    statement = (
        select(Department.id, Department.department, Job.id, Job.job, *quarters)
        .select_from(HiredEmployee)
        .join(Department, Department.id == HiredEmployee.department_id)
        .join(Job, Job.id == HiredEmployee.job_id)
        .where(when >= bounds[0], when < bounds[4])
        .group_by(Department.id, Department.department, Job.id, Job.job)
    )
    rows = list((await session.execute(statement)).all())
    # Same-named departments (or jobs) stay separate rows; their ids break the tie.
    rows.sort(key=lambda row: (row[1], row[3], row[0], row[2]))
    return [dict(zip(QUARTER_COLUMNS, (row[1], row[3], *row[4:]), strict=True)) for row in rows]


async def departments_above_mean(session: AsyncSession, year: int) -> list[dict[str, Any]]:
    """Departments that hired more in ``year`` than the mean of the departments that hired
    at least once that year (the Globant challenge's definition), most hires first."""
    bounds = _year_bounds(year)
    when = HiredEmployee.datetime
    per_department = (
        select(HiredEmployee.department_id, func.count().label("hired"))
        .where(when >= bounds[0], when < bounds[4])
        .group_by(HiredEmployee.department_id)
        .cte("per_department")
    )
    stats = select(
        func.count().label("departments"), func.sum(per_department.c.hired).label("total")
    ).cte("stats")
    # hired > total / departments, kept in integers: exact on every database.
    statement = (
        select(Department.id, Department.department, per_department.c.hired)
        .join(per_department, per_department.c.department_id == Department.id)
        .join(stats, per_department.c.hired * stats.c.departments > stats.c.total)
        .order_by(per_department.c.hired.desc(), Department.id)
    )
    rows = (await session.execute(statement)).all()
    return [{"id": row[0], "department": row[1], "hired": row[2]} for row in rows]


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A report as CSV text with a header row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[column] for column in columns] for row in rows)
    return out.getvalue()
