"""The 2021 reports on a small data set checked by hand.

Names are chosen so that code-point order differs from any human collation ("Sales" before
"accounting", "Ärzte" last), quarter bounds are hit exactly, and offsets move hires across
quarters and years. The above-mean set differs depending on whether the mean counts
departments that hired nobody that year: here it must not (mean of the 5 hiring departments
is 17/5 = 3.4, so Ärzte with 3 is out; over all 8 it would be 2.125, and Ärzte in).
"""

from __future__ import annotations

import httpx
import pytest

from tests.hr.conftest import post_batch

DEPARTMENTS = {
    1: "Accounting", 2: "Engineering", 3: "accounting", 4: "Ärzte", 5: "Zeta", 6: "Sales",
    7: "Legal", 8: "Ops",
}  # fmt: skip
JOBS = {1: "Analyst", 2: "Manager", 3: "engineer", 4: "Écrivain"}
HIRES = [
    # department, job, datetime
    (1, 1, "2021-01-01T00:00:00Z"),
    (1, 1, "2021-03-31T23:59:59Z"),
    (1, 1, "2021-04-01T00:00:00Z"),
    (1, 1, "2022-01-01T00:30:00+01:00"),  # 2021-12-31T23:30Z: Q4 of 2021
    (1, 1, "2020-12-31T23:59:59Z"),  # 2020: not counted
    (1, 2, "2021-12-31T23:59:59Z"),
    (2, 3, "2021-07-01T00:00:00Z"),
    (2, 3, "2021-07-01T00:00:00Z"),
    (2, 3, "2021-06-30T23:00:00-02:00"),  # 2021-07-01T01:00Z: Q3
    (2, 4, "2021-10-10T10:10:10Z"),
    (3, 1, "2021-05-05T05:05:05Z"),
    (4, 2, "2021-02-02T02:02:02Z"),
    (4, 2, "2021-08-08T08:08:08Z"),
    (4, 2, "2021-11-11T11:11:11Z"),
    (5, 1, "2022-06-01T00:00:00Z"),
    (6, 1, "2021-09-30T23:59:59Z"),
    (6, 1, "2021-01-15T00:00:00Z"),
    (6, 1, "2021-01-16T00:00:00Z"),
    (6, 1, "2021-04-30T00:00:00Z"),
]

BY_QUARTER_2021 = [
    {"department": "Accounting", "job": "Analyst", "Q1": 2, "Q2": 1, "Q3": 0, "Q4": 1},
    {"department": "Accounting", "job": "Manager", "Q1": 0, "Q2": 0, "Q3": 0, "Q4": 1},
    {"department": "Engineering", "job": "engineer", "Q1": 0, "Q2": 0, "Q3": 3, "Q4": 0},
    {"department": "Engineering", "job": "Écrivain", "Q1": 0, "Q2": 0, "Q3": 0, "Q4": 1},
    {"department": "Sales", "job": "Analyst", "Q1": 2, "Q2": 1, "Q3": 1, "Q4": 0},
    {"department": "accounting", "job": "Analyst", "Q1": 0, "Q2": 1, "Q3": 0, "Q4": 0},
    {"department": "Ärzte", "job": "Manager", "Q1": 1, "Q2": 0, "Q3": 1, "Q4": 1},
]
ABOVE_MEAN_2021 = [
    {"id": 1, "department": "Accounting", "hired": 5},
    {"id": 2, "department": "Engineering", "hired": 4},
    {"id": 6, "department": "Sales", "hired": 4},
]


@pytest.fixture
async def hires(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The hand-checked data set, loaded through the batch API."""
    await post_batch(
        client, "departments", [{"id": i, "department": n} for i, n in DEPARTMENTS.items()]
    )
    await post_batch(client, "jobs", [{"id": i, "job": n} for i, n in JOBS.items()])
    rows = [
        {"id": i, "name": f"E{i}", "datetime": when, "department_id": d, "job_id": j}
        for i, (d, j, when) in enumerate(HIRES, 1)
    ]
    assert (await post_batch(client, "hired_employees", rows))["inserted"] == len(HIRES)
    return client


async def test_hires_by_quarter(hires: httpx.AsyncClient) -> None:
    response = await hires.get("/hr/reports/hires-by-quarter")  # year defaults to 2021
    assert response.status_code == 200
    assert response.json() == BY_QUARTER_2021
    explicit = await hires.get("/hr/reports/hires-by-quarter", params={"year": 2021})
    assert explicit.json() == BY_QUARTER_2021


async def test_departments_above_mean(hires: httpx.AsyncClient) -> None:
    response = await hires.get("/hr/reports/departments-above-mean")
    assert response.status_code == 200
    assert response.json() == ABOVE_MEAN_2021


async def test_other_years(hires: httpx.AsyncClient) -> None:
    quarter = await hires.get("/hr/reports/hires-by-quarter", params={"year": 2022})
    assert quarter.json() == [
        {"department": "Zeta", "job": "Analyst", "Q1": 0, "Q2": 1, "Q3": 0, "Q4": 0}
    ]
    # One hiring department: nobody is above a mean it alone makes.
    above = await hires.get("/hr/reports/departments-above-mean", params={"year": 2022})
    assert above.json() == []
    empty = await hires.get("/hr/reports/hires-by-quarter", params={"year": 1990})
    assert empty.json() == []


async def test_csv_format(hires: httpx.AsyncClient) -> None:
    quarter = await hires.get("/hr/reports/hires-by-quarter", params={"format": "csv"})
    assert quarter.status_code == 200
    assert quarter.headers["content-type"].startswith("text/csv")
    lines = quarter.text.splitlines()
    assert lines[0] == "department,job,Q1,Q2,Q3,Q4"
    assert lines[1:] == [
        ",".join(str(row[c]) for c in ("department", "job", "Q1", "Q2", "Q3", "Q4"))
        for row in BY_QUARTER_2021
    ]
    above = await hires.get("/hr/reports/departments-above-mean", params={"format": "csv"})
    assert above.text == "id,department,hired\n1,Accounting,5\n2,Engineering,4\n6,Sales,4\n"


@pytest.mark.parametrize(
    "params", [{"year": 1899}, {"year": 2101}, {"year": "abc"}, {"format": "xml"}]
)
async def test_parameters_are_validated(
    client: httpx.AsyncClient, params: dict[str, object]
) -> None:
    for path in ("/hr/reports/hires-by-quarter", "/hr/reports/departments-above-mean"):
        response = await client.get(path, params=params)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
