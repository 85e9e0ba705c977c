"""POST /hr/{table}/batch: validation, limits, duplicates, retries, upserts."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.hr.conftest import DEPARTMENTS, employee, post_batch, rows_of

PROBLEM = "application/problem+json"
NOT_ISO = "datetime is not an ISO 8601 date-time like 2021-11-07T02:48:42Z"


async def test_valid_batch_is_stored(seeded: httpx.AsyncClient) -> None:
    rows = [employee(1), employee(2, department_id=2, job_id=2)]
    assert await post_batch(seeded, "hired_employees", rows) == {
        "received": 2,
        "inserted": 2,
        "rejected": [],
    }
    stored = await rows_of(seeded, "hired_employees")
    assert stored == rows


@pytest.mark.parametrize(
    ("row", "errors"),
    [
        ({"id": 9, "department": "x", "extra": 1}, ["unexpected field 'extra'"]),
        ({"department": "x"}, ["id is required"]),
        ({"id": None, "department": "x"}, ["id is required"]),
        ({"id": "9", "department": "x"}, ["id must be an integer"]),
        ({"id": 9.0, "department": "x"}, ["id must be an integer"]),
        ({"id": True, "department": "x"}, ["id must be an integer"]),
        ({"id": 2**31, "department": "x"}, ["id is out of range (-2147483648..2147483647)"]),
        ({"id": 2**63, "department": "x"}, ["id is out of range (-2147483648..2147483647)"]),
        ({"id": 9, "department": ""}, ["department is empty"]),
        ({"id": 9, "department": "  \t"}, ["department is empty"]),
        ({"id": 9, "department": 5}, ["department must be a string"]),
        ({"id": 9, "department": "a\x00b"}, ["department contains a NUL byte"]),
        ({}, ["id is required", "department is required"]),
    ],
)
async def test_each_rejection_reason(
    client: httpx.AsyncClient, row: dict[str, object], errors: list[str]
) -> None:
    summary = await post_batch(client, "departments", [row])
    assert summary == {"received": 1, "inserted": 0, "rejected": [{"index": 0, "errors": errors}]}
    assert await rows_of(client, "departments") == []


async def test_lone_surrogate_is_refused(client: httpx.AsyncClient) -> None:
    # A JSON escape can name half a UTF-16 pair, which no database can store.
    response = await client.post(
        "/hr/departments/batch",
        content=b'[{"id": 9, "department": "a\\ud800"}]',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["type"].endswith("/malformed-json")


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"datetime": "2021-02-30T00:00:00Z"}, [NOT_ISO]),
        ({"datetime": "yesterday"}, [NOT_ISO]),
        ({"datetime": 1636253322}, ["datetime must be a string"]),
        ({"department_id": 99}, ["department_id 99 does not exist"]),
        ({"department_id": 99, "job_id": 77},
         ["department_id 99 does not exist", "job_id 77 does not exist"]),
        ({"name": ""}, ["name is empty"]),
        ({"datetime": "0001-01-01T00:30:00+01:00"}, [NOT_ISO]),  # before year 1 in UTC
        ({"datetime": "9999-12-31T23:30:00-01:00"}, [NOT_ISO]),  # after year 9999 in UTC
    ],
)  # fmt: skip
async def test_employee_rejections(
    seeded: httpx.AsyncClient, changes: dict[str, object], errors: list[str]
) -> None:
    summary = await post_batch(seeded, "hired_employees", [employee(1), employee(2, **changes)])
    assert summary == {"received": 2, "inserted": 1, "rejected": [{"index": 1, "errors": errors}]}
    assert [row["id"] for row in await rows_of(seeded, "hired_employees")] == [1]


async def test_datetimes_are_stored_in_utc(seeded: httpx.AsyncClient) -> None:
    rows = [
        employee(1, datetime="2021-11-07T02:48:42+05:30"),
        employee(2, datetime="2021-11-07 02:48:42"),
        employee(3, datetime="2021-11-07T02:48:42.25Z"),
    ]
    assert (await post_batch(seeded, "hired_employees", rows))["inserted"] == 3
    stored = [row["datetime"] for row in await rows_of(seeded, "hired_employees")]
    assert stored == ["2021-11-06T21:18:42Z", "2021-11-07T02:48:42Z", "2021-11-07T02:48:42.250000Z"]


async def test_the_last_of_duplicate_keys_counts(client: httpx.AsyncClient) -> None:
    # orjson and PostgreSQL's jsonb (which may read the body itself) agree on this.
    response = await client.post(
        "/hr/departments/batch",
        content=b'[{"id": 1, "department": "first", "department": "last"}]',
        headers={"content-type": "application/json"},
    )
    assert response.json()["inserted"] == 1
    assert await rows_of(client, "departments") == [{"id": 1, "department": "last"}]


async def test_batch_limits(client: httpx.AsyncClient) -> None:
    empty = await client.post("/hr/departments/batch", json=[])
    assert empty.status_code == 422
    assert empty.headers["content-type"] == PROBLEM
    too_many = [{"id": i, "department": f"d{i}"} for i in range(1, 1002)]
    over = await client.post("/hr/departments/batch", json=too_many)
    assert over.status_code == 422
    assert over.headers["content-type"] == PROBLEM
    assert (await post_batch(client, "departments", too_many[:1000]))["inserted"] == 1000
    page = (await client.get("/hr/departments", params={"limit": 1})).json()
    assert page["total"] == 1000


async def test_not_a_list_or_not_objects_is_422(client: httpx.AsyncClient) -> None:
    for body in ({"id": 1, "department": "x"}, [1, 2], "x", [{"id": 1}, None]):
        response = await client.post("/hr/departments/batch", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == PROBLEM
    malformed = await client.post(
        "/hr/departments/batch", content=b"[{", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422
    assert malformed.json()["type"].endswith("/malformed-json")
    wrong_type = await client.post(
        "/hr/departments/batch", content=b"[]", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.request("OPTIONS", "/hr/backups")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.headers["content-type"] == PROBLEM
    assert (await client.delete("/hr/jobs")).headers["allow"] == "GET"


async def test_unknown_table_is_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.post("/hr/employees/batch", json=[{"id": 1}]),
        await client.get("/hr/employees"),
        await client.post("/hr/employees/csv", content=b"1,x\n"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"].endswith("/unknown-table")


async def test_duplicates_within_the_batch_and_the_table(client: httpx.AsyncClient) -> None:
    first = await post_batch(client, "departments", DEPARTMENTS)
    assert first["inserted"] == 3
    again = await post_batch(
        client,
        "departments",
        [{"id": 1, "department": "Again"}, {"id": 7, "department": "New"},
         {"id": 7, "department": "Twice"}],
    )  # fmt: skip
    assert again == {
        "received": 3,
        "inserted": 1,
        "rejected": [
            {"index": 0, "errors": ["duplicate id 1: already exists"]},
            {"index": 2, "errors": ["duplicate id 7: repeated in this batch (first at index 1)"]},
        ],
    }
    assert {r["id"]: r["department"] for r in await rows_of(client, "departments")} == {
        1: "Accounting", 2: "Business Development", 3: "Engineering", 7: "New"
    }  # fmt: skip


async def test_a_rejected_row_does_not_claim_its_id(client: httpx.AsyncClient) -> None:
    summary = await post_batch(
        client, "departments", [{"id": 5, "department": ""}, {"id": 5, "department": "Ok"}]
    )
    assert summary["inserted"] == 1
    assert summary["rejected"] == [{"index": 0, "errors": ["department is empty"]}]


async def test_retrying_a_batch_stores_nothing_twice(seeded: httpx.AsyncClient) -> None:
    rows = [employee(i) for i in range(1, 6)]
    assert (await post_batch(seeded, "hired_employees", rows))["inserted"] == 5
    retry = await post_batch(seeded, "hired_employees", rows)
    assert retry["inserted"] == 0
    assert [r["errors"] for r in retry["rejected"]] == [
        [f"duplicate id {i}: already exists"] for i in range(1, 6)
    ]
    assert len(await rows_of(seeded, "hired_employees")) == 5


async def test_on_conflict_update_upserts(seeded: httpx.AsyncClient) -> None:
    await post_batch(seeded, "hired_employees", [employee(1), employee(2)])
    changed = [employee(1, name="Renamed", job_id=2), employee(3)]
    summary = await post_batch(seeded, "hired_employees", changed, on_conflict="update")
    assert summary == {"received": 2, "inserted": 2, "rejected": []}
    stored = {r["id"]: r for r in await rows_of(seeded, "hired_employees")}
    assert stored[1]["name"] == "Renamed"
    assert stored[1]["job_id"] == 2
    assert stored[2]["name"] == "Employee 2"
    assert sorted(stored) == [1, 2, 3]
    bad = await seeded.post("/hr/jobs/batch", json=[], params={"on_conflict": "merge"})
    assert bad.status_code == 422


async def test_foreign_keys_are_checked_against_the_database(client: httpx.AsyncClient) -> None:
    summary = await post_batch(client, "hired_employees", [employee(1)])
    assert summary["rejected"] == [
        {"index": 0, "errors": ["department_id 1 does not exist", "job_id 1 does not exist"]}
    ]
    # Once the referenced rows exist (an earlier batch), the same row is accepted.
    await post_batch(client, "departments", DEPARTMENTS[:1])
    await post_batch(client, "jobs", [{"id": 1, "job": "Analyst"}])
    assert (await post_batch(client, "hired_employees", [employee(1)]))["inserted"] == 1


async def test_rejected_rows_are_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="atrium.hr.ingest"):
        await post_batch(client, "jobs", [{"id": 1, "job": ""}])
    [logged] = [r for r in caplog.records if r.getMessage() == "hr row rejected"]
    assert logged.__dict__["errors"] == ["job is empty"]
    assert logged.__dict__["table"] == "jobs"
    assert logged.__dict__["source"] == "batch"


async def test_outcomes_are_counted_in_metrics(client: httpx.AsyncClient) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        labels = {"table": "jobs", "source": "batch"}
        return REGISTRY.get_sample_value(f"atrium_hr_rows_{name}_total", labels) or 0.0

    before = sample("ingested"), sample("rejected")
    await post_batch(client, "jobs", [{"id": 1, "job": "a"}, {"id": 2, "job": ""}])
    assert (sample("ingested"), sample("rejected")) == (before[0] + 1, before[1] + 1)


async def test_pagination(client: httpx.AsyncClient) -> None:
    rows = [{"id": i, "job": f"Job {i}"} for i in range(250, 0, -1)]
    await post_batch(client, "jobs", rows)
    first = (await client.get("/hr/jobs")).json()
    assert (first["total"], first["limit"], first["offset"]) == (250, 100, 0)
    assert [r["id"] for r in first["items"]] == list(range(1, 101))
    last = (await client.get("/hr/jobs", params={"limit": 100, "offset": 200})).json()
    assert [r["id"] for r in last["items"]] == list(range(201, 251))
    beyond = (await client.get("/hr/jobs", params={"offset": 5000})).json()
    assert beyond["items"] == []
    assert beyond["total"] == 250
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 2**63}):
        response = await client.get("/hr/jobs", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == PROBLEM
