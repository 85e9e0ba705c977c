"""hr tables

Revision ID: 0001
Revises: None
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from atrium.platform.sqltypes import LongText, UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "departments",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("department", LongText, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_departments")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("job", LongText, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_table(
        "hired_employees",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", LongText, nullable=False),
        sa.Column("datetime", UtcDateTime(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
            name=op.f("fk_hired_employees_department_id_departments"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_hired_employees_job_id_jobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hired_employees")),
    )


def downgrade() -> None:
    op.drop_table("hired_employees")
    op.drop_table("jobs")
    op.drop_table("departments")
