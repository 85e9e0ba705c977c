"""Alembic migrations (run with ``atrium migrate``)."""
