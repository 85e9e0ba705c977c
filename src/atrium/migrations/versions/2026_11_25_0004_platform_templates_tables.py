"""platform templates tables

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from atrium.platform.sqltypes import (
    LongBinary,
    LongText,
    UtcDateTime,
    drop_touch_trigger_ddl,
    empty_text,
    random_uuid,
    server_precise_now,
    touch_trigger_ddl,
)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    dialect = op.get_bind().dialect
    # Milliseconds on SQLite too: ``modified`` doubles as a version (see the templates model).
    now = server_precise_now()

    op.create_table(
        "templates",
        sa.Column("tidx", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("templateid", sa.Uuid(), server_default=random_uuid(), nullable=False),
        sa.Column("name", LongText, server_default=empty_text(), nullable=False),
        sa.Column("description", LongText, server_default=empty_text(), nullable=False),
        sa.Column("content", LongText, server_default=empty_text(), nullable=False),
        sa.Column("created", UtcDateTime(), server_default=now, nullable=False),
        sa.Column("modified", UtcDateTime(), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("tidx", name=op.f("pk_templates")),
        sa.UniqueConstraint("templateid", name=op.f("uq_templates_templateid")),
    )
    op.create_index(
        op.f("ix_templates_name"), "templates", ["name"], mysql_length=255, mariadb_length=255
    )
    for statement in touch_trigger_ddl(dialect, "templates", "modified", key="tidx"):
        op.execute(statement)

    # API keys when no Redis is configured (with Redis they live in the hash sec_apikeys).
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("owner", LongText, nullable=False),
        sa.Column("scopes", LongText, nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("created", UtcDateTime(), server_default=now, nullable=False),
        sa.Column("revoked", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )

    # Idempotency keys when no Redis is configured.
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", LongText, nullable=True),
        sa.Column("body", LongBinary, nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_expires_ms"), "idempotency_keys", ["expires_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_keys_expires_ms"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("api_keys")
    for statement in drop_touch_trigger_ddl(op.get_bind().dialect, "templates", "modified"):
        op.execute(statement)
    op.drop_index(op.f("ix_templates_name"), table_name="templates")
    op.drop_table("templates")
