"""Tables of the market domain."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Date, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atrium.platform.db import Base
from atrium.platform.sqltypes import BigIntPK

# AlphaVantage quotes prices with four decimals; 14 integer digits leave room for any share.
PRICE_PRECISION, PRICE_SCALE = 18, 4
SYMBOL_MAX_LENGTH = 20


class FinancialData(Base):
    """One symbol's open/close prices and volume on one trading day."""

    __tablename__ = "financial_data"
    __table_args__ = (
        # Serves the upsert and every symbol-filtered read (statistics, chart, ?symbol=). On
        # PostgreSQL it also carries the values, so those reads are index-only scans.
        UniqueConstraint(
            "symbol",
            "date",
            name="uq_financial_data_symbol_date",
            postgresql_include=["open_price", "close_price", "volume"],
        ),
        # Serves the contract's order (date, symbol) and date-range reads without a symbol.
        Index("ix_financial_data_date_symbol", "date", "symbol"),
        CheckConstraint("open_price >= 0 AND close_price >= 0", name="prices_not_negative"),
        CheckConstraint("volume >= 0", name="volume_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(SYMBOL_MAX_LENGTH))
    date: Mapped[dt.date] = mapped_column(Date)
    open_price: Mapped[Decimal] = mapped_column(Numeric(PRICE_PRECISION, PRICE_SCALE))
    close_price: Mapped[Decimal] = mapped_column(Numeric(PRICE_PRECISION, PRICE_SCALE))
    volume: Mapped[int] = mapped_column(BigInteger)
