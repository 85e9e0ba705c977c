"""Fixtures shared by the platform tests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every record as the app's JSON formatter renders it, parsed."""
    records: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(json.loads(self.format(record)))

    root = logging.getLogger()
    handler = Collect()
    handler.setFormatter(next(h for h in root.handlers if getattr(h, "_atrium", False)).formatter)
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)
