"""Storing HR rows: JSON batches and CSV streams, the same on every engine.

Every path validates every row, stores the valid ones and reports the others with reasons,
all inside the caller's transaction (the request's session, or the CLI's): nothing is ever
stored partially. How rows reach the database is the engine's loader's business
(:mod:`atrium.hr.bulk`); keys are checked set-based there, never with a query per row.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Mapping, Sequence
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.hr import rows as r
from atrium.hr.bulk import loader_for
from atrium.hr.bulk.base import Candidates, as_int
from atrium.hr.errors import ReferenceGone
from atrium.hr.rows import TableSpec
from atrium.hr.summary import IngestResult, Rejected
from atrium.platform.metrics import HR_ROWS_INGESTED, HR_ROWS_REJECTED

log = logging.getLogger("atrium.hr.ingest")

Source = Literal["batch", "csv", "cli"]


def record(result: IngestResult, source: Source, reject_cap: int) -> None:
    """Log the rejected rows (up to the cap, with reasons) and count the outcome."""
    for rejected in result.rejected[:reject_cap]:
        log.warning(
            "hr row rejected",
            extra={
                "table": result.table,
                "source": source,
                "index": rejected.index,
                "errors": rejected.errors,
            },
        )
    log.info(
        "hr ingest",
        extra={
            "table": result.table,
            "source": source,
            "received": result.received,
            "inserted": result.inserted,
            "rejected": result.rejected_count,
        },
    )
    HR_ROWS_INGESTED.labels(table=result.table, source=source).inc(result.inserted)
    HR_ROWS_REJECTED.labels(table=result.table, source=source).inc(result.rejected_count)


async def ingest_batch(
    session: AsyncSession,
    spec: TableSpec,
    items: Sequence[Mapping[str, Any]],
    *,
    update: bool = False,
    body: bytes | None = None,
) -> IngestResult:
    """Validate and store one JSON batch; invalid rows are rejected, never stored.

    ``body``, the JSON text of ``items``, lets the engine read a plainly valid batch itself
    (see :meth:`~atrium.hr.bulk.base.Loader.store_clean_batch`)."""
    loader = loader_for(session)
    await loader.prepare_write(session, spec)
    result = IngestResult(table=spec.name, received=len(items))
    suspects = r.batch_suspects(spec, items)
    objected = False  # a key refused the batch already: skip straight to finding out which
    if body is not None and not update and not suspects:
        outcome = await loader.store_clean_batch(session, spec, items, body)
        if outcome == "stored":
            result.inserted = len(items)
            return result
        objected = outcome == "objected"
    candidates: Candidates = []
    for index, (row, errors) in enumerate(r.check_json_rows(spec, items, suspects)):
        if row is None:
            result.rejected.append(Rejected(index, errors))
        else:
            candidates.append((index, row))
    try:
        storable, written = await loader.store_rows(
            session, spec, candidates, result, update=update, objected=objected
        )
    except IntegrityError as exc:
        raise ReferenceGone(
            f"a referenced row was deleted while {spec.name} were written; nothing was stored, "
            "retry"
        ) from exc
    left = [(index, row) for index, row in storable if row[0] not in written]
    if left:
        # Another transaction stored the id, or deleted a referenced row, between our check
        # and our insert (which skips such rows): ask again, set-based, which it was.
        _, late = await loader.check_keys(session, spec, left, update=update, where="batch")
        explained = {rejected.index for rejected in late}
        result.rejected.extend(late)
        result.rejected.extend(
            Rejected(index, [r.duplicate_existing(as_int(row[0]))])
            for index, row in left
            if index not in explained
        )
    result.inserted = len(storable) - len(left)
    result.rejected.sort(key=lambda rejected: rejected.index)
    result.rejected_count = len(result.rejected)
    return result


async def ingest_csv(
    session: AsyncSession,
    spec: TableSpec,
    source: AsyncIterable[bytes],
    *,
    update: bool = False,
    reject_cap: int = 1000,
) -> IngestResult:
    """Validate and store one streamed CSV file (no header) in the session's transaction."""
    loader = loader_for(session)
    return await loader.ingest_csv(session, spec, source, update=update, reject_cap=reject_cap)
