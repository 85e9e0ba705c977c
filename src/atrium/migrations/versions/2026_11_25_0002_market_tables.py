"""market tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from atrium.platform.sqltypes import BigIntPK

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "financial_data",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("open_price", sa.Numeric(18, 4), nullable=False),
        sa.Column("close_price", sa.Numeric(18, 4), nullable=False),
        sa.Column("volume", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_financial_data"),
        # INCLUDE (PostgreSQL only; SQLite ignores it) makes symbol reads index-only scans.
        sa.UniqueConstraint(
            "symbol",
            "date",
            name="uq_financial_data_symbol_date",
            postgresql_include=["open_price", "close_price", "volume"],
        ),
        sa.CheckConstraint(
            "open_price >= 0 AND close_price >= 0",
            name="ck_financial_data_prices_not_negative",
        ),
        sa.CheckConstraint("volume >= 0", name="ck_financial_data_volume_not_negative"),
    )
    op.create_index("ix_financial_data_date_symbol", "financial_data", ["date", "symbol"])


def downgrade() -> None:
    op.drop_index("ix_financial_data_date_symbol", table_name="financial_data")
    op.drop_table("financial_data")
