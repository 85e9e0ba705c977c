"""certificates tables

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from atrium.platform.sqltypes import BigIntPK, LongText, UtcDateTime, server_now

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigIntPK, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", UtcDateTime(), server_default=server_now(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), server_default=server_now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email_key", name=op.f("uq_users_email_key")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "certificates",
        sa.Column("id", BigIntPK, primary_key=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("body", LongText, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("private_key_encrypted", LongText, nullable=False),
        sa.Column("created_at", UtcDateTime(), server_default=server_now(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), server_default=server_now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificates")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_certificates_user_id_users"),
            ondelete="CASCADE",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_certificates_user_id_active", "certificates", ["user_id", "active"])
    op.create_table(
        "certificate_events",
        sa.Column("id", BigIntPK, primary_key=True),
        sa.Column("certificate_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
        sa.Column("payload", LongText, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("last_error", LongText, nullable=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_events")),
    )
    op.create_index(
        "ix_certificate_events_pending",
        "certificate_events",
        ["certificate_id", "id"],
        postgresql_where=sa.text("delivered_at IS NULL"),
        sqlite_where=sa.text("delivered_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_certificate_events_pending", table_name="certificate_events")
    op.drop_table("certificate_events")
    op.drop_index("ix_certificates_user_id_active", table_name="certificates")
    op.drop_table("certificates")
    op.drop_table("users")
