"""Imports every domain's models so that one metadata knows all tables."""

from __future__ import annotations

import importlib


def import_all_models() -> None:
    """Register every table on ``Base.metadata`` (for Alembic and test set-up)."""
    for domain in ("hr", "market", "certificates", "templates"):
        importlib.import_module(f"atrium.{domain}.models")
    # The platform's own tables (API keys, and idempotency keys).
    for module in ("apikeys", "idempotency"):
        importlib.import_module(f"atrium.platform.{module}")
