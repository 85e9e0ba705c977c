"""Outcome of one ingest (batch, CSV upload or CLI file), independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Rejected:
    """A refused row: its 0-based index (array index, or CSV line number - 1) and why."""

    index: int
    errors: list[str]


@dataclass(slots=True)
class IngestResult:
    """Counts of one ingest; ``rejected`` may be capped, ``rejected_count`` never is."""

    table: str
    received: int = 0
    inserted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    rejected_count: int = 0
