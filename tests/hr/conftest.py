"""Shared data and helpers for the hr tests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

DEPARTMENTS = [
    {"id": 1, "department": "Accounting"},
    {"id": 2, "department": "Business Development"},
    {"id": 3, "department": "Engineering"},
]
JOBS = [
    {"id": 1, "job": "Analyst"},
    {"id": 2, "job": "Manager"},
]


def employee(id: int, department_id: int = 1, job_id: int = 1, **extra: Any) -> dict[str, Any]:
    """A valid hired_employees row."""
    row = {
        "id": id,
        "name": f"Employee {id}",
        "datetime": "2021-11-07T02:48:42Z",
        "department_id": department_id,
        "job_id": job_id,
    }
    row.update(extra)
    return row


async def post_batch(
    client: httpx.AsyncClient, table: str, rows: list[Any], **params: str
) -> dict[str, Any]:
    """POST a batch that must be accepted (200); its summary."""
    response = await client.post(f"/hr/{table}/batch", json=rows, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def rows_of(client: httpx.AsyncClient, table: str) -> list[dict[str, Any]]:
    """Every row of a table, via the API."""
    response = await client.get(f"/hr/{table}", params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, with DEPARTMENTS and JOBS stored."""
    assert (await post_batch(client, "departments", DEPARTMENTS))["inserted"] == 3
    assert (await post_batch(client, "jobs", JOBS))["inserted"] == 2
    return client
