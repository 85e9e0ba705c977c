"""platform templates tables

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's CURRENT_TIMESTAMP has whole seconds; this has milliseconds, written in the exact
# text layout SQLAlchemy uses for DateTime on SQLite (six fractional digits), so a timestamp
# read back and bound again compares equal (optimistic concurrency relies on it).
SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
# ``modified`` strictly increases, even for two updates within one clock tick.
SQLITE_NEXT_MODIFIED = (
    "strftime('%Y-%m-%d %H:%M:%f', max(julianday('now'), julianday(OLD.modified) "
    "+ 1.0 / 86400000.0)) || '000'"
)

PG_TRIGGER_FUNCTION = """
CREATE FUNCTION templates_touch_modified() RETURNS trigger AS $$
BEGIN
    NEW.modified := greatest(clock_timestamp(), OLD.modified + interval '1 microsecond');
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""
PG_TRIGGER = """
CREATE TRIGGER templates_modified BEFORE UPDATE ON templates
FOR EACH ROW EXECUTE FUNCTION templates_touch_modified()
"""
# AFTER trigger (SQLite has no BEFORE-update assignment); it skips updates that already set
# ``modified`` themselves (the service does, to get the value back through RETURNING).
SQLITE_TRIGGER = """
CREATE TRIGGER templates_modified AFTER UPDATE ON templates
FOR EACH ROW WHEN NEW.modified IS OLD.modified
BEGIN
    UPDATE templates SET modified = NEXT_MODIFIED WHERE tidx = NEW.tidx;
END
""".replace("NEXT_MODIFIED", SQLITE_NEXT_MODIFIED)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    now = sa.text("now()") if postgres else sa.text(SQLITE_NOW)
    new_uuid = sa.text("gen_random_uuid()") if postgres else sa.text("(lower(hex(randomblob(16))))")

    op.create_table(
        "templates",
        sa.Column("tidx", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("templateid", sa.Uuid(), server_default=new_uuid, nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("content", sa.Text(), server_default="", nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("modified", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("tidx", name=op.f("pk_templates")),
        sa.UniqueConstraint("templateid", name=op.f("uq_templates_templateid")),
    )
    op.create_index(op.f("ix_templates_name"), "templates", ["name"])
    if postgres:
        op.execute(PG_TRIGGER_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)

    # API keys when no Redis is configured (with Redis they live in the hash sec_apikeys).
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("revoked", sa.DateTime(timezone=True), nullable=True),
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
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_expires_ms"), "idempotency_keys", ["expires_ms"])


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index(op.f("ix_idempotency_keys_expires_ms"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("api_keys")
    op.execute("DROP TRIGGER IF EXISTS templates_modified" + (" ON templates" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS templates_touch_modified()")
    op.drop_index(op.f("ix_templates_name"), table_name="templates")
    op.drop_table("templates")
