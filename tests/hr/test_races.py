"""Batches racing each other on the same ids, for real: several requests at once, each on its
own database connection. Whatever the interleaving, every id is stored once and each answer is
a summary (200) or, when the database had to roll one back, 409 — never 500."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.hr.conftest import employee


async def test_overlapping_batches_in_opposite_orders_never_fail(
    seeded: httpx.AsyncClient,
) -> None:
    statuses: Counter[int] = Counter()
    expected: set[int] = set()
    for round_ in range(6):
        rows = [employee(round_ * 1000 + n) for n in range(1, 300)]
        expected |= {row["id"] for row in rows}
        batches = [rows, rows[::-1], rows[::2], rows[::-3]]
        for params in ({}, {"on_conflict": "update"}):
            answers = await asyncio.gather(
                *(
                    seeded.post("/hr/hired_employees/batch", json=batch, params=params)
                    for batch in batches
                )
            )
            for answer in answers:
                statuses[answer.status_code] += 1
                assert answer.status_code in {200, 409}, answer.text
                if answer.status_code == 409:
                    assert answer.headers["retry-after"]
    stored = [row["id"] for row in await _all_rows(seeded)]
    assert sorted(stored) == sorted(expected)
    assert statuses[200], statuses


async def _all_rows(client: httpx.AsyncClient) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    while True:
        page = await client.get("/hr/hired_employees", params={"limit": 1000, "offset": len(rows)})
        items = page.json()["items"]
        rows += items
        if len(items) < 1000:
            return rows
