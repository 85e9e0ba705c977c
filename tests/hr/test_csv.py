"""POST /hr/{table}/csv: streaming upload, rejection rules, BOM/CRLF, multipart, retries.

The same expectations hold on SQLite (Python validation) and PostgreSQL (COPY + SQL): the
suite runs on both, so any difference between the two paths fails here.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.hr.conftest import rows_of

PROBLEM = "application/problem+json"
NOT_ISO = "datetime is not an ISO 8601 date-time like 2021-11-07T02:48:42Z"
T = "2021-01-01T00:00:00Z"

# (line, reasons or None when the row is stored)
CASES: list[tuple[str, list[str] | None]] = [
    (f"1,Ann,{T},1,1", None),
    (f"2,,{T},1,1", ["name is empty"]),
    ("3,Bob,,1,1", ["datetime is empty"]),
    (f"4,Cy,{T},,1", ["department_id is empty"]),
    (f"5,Di,{T},1", ["expected 5 fields, got 4"]),
    (f"6,Ed,{T},1,1,9", ["expected 5 fields, got 6"]),
    (f"x7,Fa,{T},1,1", ["id is not an integer"]),
    ("8,Gi,2021-02-30T00:00:00Z,1,1", [NOT_ISO]),
    (f"9,Ha,{T},99,1", ["department_id 99 does not exist"]),
    ("10,Io,2020-02-29T12:00:00Z,1,1", None),
    (f'11,"Doe, ""Jo""",{T},1,1', None),
    (f'12,"Bad"x,{T},1,1', ["malformed CSV quoting"]),
    ("13,Ka,2021-01-01T00:00:00+01:00,1,1", None),
    (f"1,Dup,{T},1,1", ["duplicate id 1: repeated in this file (first at index 0)"]),
    ("", None),  # blank: not a record at all
    (f"2147483648,Big,{T},1,1", ["id is out of range (-2147483648..2147483647)"]),
    (f"007,Lee,{T},1,1", ["id is not an integer"]),
    ("14,Mo,2021-01-01T24:00:00Z,1,1", [NOT_ISO]),
    ("15,Né,2021-06-30T23:59:59.123456Z,2,2", None),
    (f"16,Back\\slash \\N \\.,{T},1,1", None),
    (f"17,  ,{T},1,1", ["name is empty"]),
    ("18,Tab\there,2021-01-01 00:00:00,1,1", None),
    (f"19,Zoë,{T},1,3", ["job_id 3 does not exist"]),
    ("20,Now,now,1,1", [NOT_ISO]),
    ("21,TT,2021-11-07TT2:48:42Z,1,1", [NOT_ISO]),
    (f"22, Spaced ,{T},1,1", None),
    (f"23,Ctrl\x01x,{T},1,1", None),
    (f"24,Plus,{T},+1,1", ["department_id is not an integer"]),
    ("\\.", ["expected 5 fields, got 1"]),
    (f"25,cr\rin,{T},1,1", None),
    (f"-5,Neg,{T},1,1", None),
    (f"26,Far,{T},1,2147483647", ["job_id 2147483647 does not exist"]),
    (f"27,ab,{T},1,99999999999", ["job_id is out of range (-2147483648..2147483647)"]),
    ("28,, ,,", ["name is empty", "datetime is empty", "department_id is empty",
                 "job_id is empty"]),
    # RFC 4180: a quoted field may hold line breaks; a record is one index, however many lines
    (f'29,"Multi\nLine",{T},1,1', None),
    (f'30,"CR\r\nLF, ""q""\n",{T},1,1', None),
    (f'31,"two\nlines",{T},99,1', ["department_id 99 does not exist"]),
    (f'32,"\n",{T},1,1', ["name is empty"]),
    ('33,"x"', ["expected 5 fields, got 2"]),  # the quote closed before the line break
    (f"y,{T},1,1", ["expected 5 fields, got 4"]),
    (f'34,"Ann\n\n",{T},1,2', None),
]  # fmt: skip


async def upload(
    client: httpx.AsyncClient, table: str, data: bytes, **params: str
) -> dict[str, Any]:
    """POST a CSV body that must be accepted (200); the summary."""
    response = await client.post(
        f"/hr/{table}/csv", content=data, params=params, headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_every_rule_on_one_file(seeded: httpx.AsyncClient) -> None:
    data = "\n".join(line for line, _ in CASES).encode() + b"\n"
    summary = await upload(seeded, "hired_employees", data)
    expected = [{"index": i, "errors": reasons} for i, (_, reasons) in enumerate(CASES) if reasons]
    stored_lines = [i for i, (line, reasons) in enumerate(CASES) if line and not reasons]
    assert summary["rejected"] == expected
    assert summary == {
        "received": len(CASES) - 1,
        "inserted": len(stored_lines),
        "rejected": expected,
        "rejected_count": len(expected),
    }
    stored = {row["id"]: row for row in await rows_of(seeded, "hired_employees")}
    assert sorted(stored) == sorted(int(CASES[i][0].split(",")[0]) for i in stored_lines)
    assert stored[1]["name"] == "Ann"
    assert stored[11]["name"] == 'Doe, "Jo"'
    assert stored[13]["datetime"] == "2020-12-31T23:00:00Z"
    assert stored[15] == {
        "id": 15,
        "name": "Né",
        "datetime": "2021-06-30T23:59:59.123456Z",
        "department_id": 2,
        "job_id": 2,
    }
    assert stored[16]["name"] == "Back\\slash \\N \\."
    assert stored[18]["datetime"] == "2021-01-01T00:00:00Z"
    assert stored[22]["name"] == " Spaced "
    assert stored[23]["name"] == "Ctrl\x01x"
    assert stored[25]["name"] == "cr\rin"
    assert stored[29]["name"] == "Multi\nLine"
    assert stored[30]["name"] == 'CR\r\nLF, "q"\n'
    assert stored[34]["name"] == "Ann\n\n"


async def test_bom_and_crlf_load(client: httpx.AsyncClient) -> None:
    data = "\ufeff1,Accounting\r\n2,Business Development\r\n3,Engineering".encode()
    summary = await upload(client, "departments", data)
    assert summary == {"received": 3, "inserted": 3, "rejected": [], "rejected_count": 0}
    assert await rows_of(client, "departments") == [
        {"id": 1, "department": "Accounting"},
        {"id": 2, "department": "Business Development"},
        {"id": 3, "department": "Engineering"},
    ]


async def test_empty_field_rows_are_rejected_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="atrium.hr.ingest"):
        summary = await upload(client, "jobs", b"1,Analyst\r\n2,\r\n,Manager\r\n")
    assert summary["inserted"] == 1
    assert summary["rejected"] == [
        {"index": 1, "errors": ["job is empty"]},
        {"index": 2, "errors": ["id is empty"]},
    ]
    logged = [r.__dict__ for r in caplog.records if r.getMessage() == "hr row rejected"]
    assert [(r["index"], r["errors"], r["source"]) for r in logged] == [
        (1, ["job is empty"], "csv"),
        (2, ["id is empty"], "csv"),
    ]
    assert [row["id"] for row in await rows_of(client, "jobs")] == [1]


async def test_text_that_no_database_can_store_is_rejected(client: httpx.AsyncClient) -> None:
    data = b"1,ok\n2,bad\xff\xfe\n3,nul\x00\n4,fine\n"
    summary = await upload(client, "jobs", data)
    reason = ["line is not valid UTF-8 text or contains a NUL byte"]
    assert summary["rejected"] == [{"index": 1, "errors": reason}, {"index": 2, "errors": reason}]
    assert [row["job"] for row in await rows_of(client, "jobs")] == ["ok", "fine"]


async def test_multipart_upload(client: httpx.AsyncClient) -> None:
    files = {"file": ("departments.csv", b"\xef\xbb\xbf1,Accounting\r\n2,Sales\r\n", "text/csv")}
    response = await client.post("/hr/departments/csv", files=files, data={"note": "x"})
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 2
    assert [row["department"] for row in await rows_of(client, "departments")] == [
        "Accounting",
        "Sales",
    ]


async def test_multipart_without_a_file_field_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/hr/departments/csv", files={"other": ("a.csv", b"1,x\n")})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert "'file'" in response.json()["detail"]
    assert await rows_of(client, "departments") == []


async def test_unsupported_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/hr/departments/csv", content=b"<x/>", headers={"content-type": "application/xml"}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM


async def test_retry_stores_nothing_twice_and_update_overwrites(client: httpx.AsyncClient) -> None:
    data = b"1,Analyst\n2,Manager\n"
    assert (await upload(client, "jobs", data))["inserted"] == 2
    retry = await upload(client, "jobs", data)
    assert retry == {
        "received": 2,
        "inserted": 0,
        "rejected": [
            {"index": 0, "errors": ["duplicate id 1: already exists"]},
            {"index": 1, "errors": ["duplicate id 2: already exists"]},
        ],
        "rejected_count": 2,
    }
    upsert = await upload(client, "jobs", b"2,Director\n3,Intern\n", on_conflict="update")
    assert upsert == {"received": 2, "inserted": 2, "rejected": [], "rejected_count": 0}
    assert {r["id"]: r["job"] for r in await rows_of(client, "jobs")} == {
        1: "Analyst",
        2: "Director",
        3: "Intern",
    }


async def test_update_still_rejects_ids_repeated_in_the_file(client: httpx.AsyncClient) -> None:
    summary = await upload(client, "jobs", b"1,A\n1,B\n", on_conflict="update")
    assert summary["rejected"] == [
        {"index": 1, "errors": ["duplicate id 1: repeated in this file (first at index 0)"]}
    ]
    assert await rows_of(client, "jobs") == [{"id": 1, "job": "A"}]


async def test_rejected_list_is_capped_but_counted(client: httpx.AsyncClient) -> None:
    cap = client._transport.app.state.settings.hr_reject_list_cap  # type: ignore[attr-defined]
    data = b"".join(b"%d,\n" % i for i in range(1, cap + 51)) + b"99999,Ok\n"
    summary = await upload(client, "jobs", data)
    assert summary["received"] == cap + 51
    assert summary["inserted"] == 1
    assert summary["rejected_count"] == cap + 50
    assert len(summary["rejected"]) == cap
    assert summary["rejected"][-1]["index"] == cap - 1


async def test_a_missing_body_is_422_but_an_empty_file_loads_nothing(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.post("/hr/jobs/csv")
    assert missing.status_code == 422
    assert missing.json()["type"].endswith("/empty-upload")
    nothing = {"received": 0, "inserted": 0, "rejected": [], "rejected_count": 0}
    assert await upload(client, "jobs", b"") == nothing
    empty_file = await client.post("/hr/jobs/csv", files={"file": ("jobs.csv", b"")})
    assert empty_file.json() == nothing


async def test_a_file_of_blank_lines_loads_nothing(client: httpx.AsyncClient) -> None:
    assert await upload(client, "jobs", b"\r\n\n") == {
        "received": 0,
        "inserted": 0,
        "rejected": [],
        "rejected_count": 0,
    }


async def test_a_file_spanning_many_blocks(seeded: httpx.AsyncClient) -> None:
    # ~2.5 MB: several 1 MiB blocks, so lines and CRLF pairs meet block boundaries.
    lines = [
        f"{i},Name {i} {'x' * 30},2021-03-04T05:06:07Z,{i % 3 + 1},{i % 2 + 1}"
        for i in range(1, 40001)
    ]
    lines[12345] = "12346,,2021-03-04T05:06:07Z,1,1"
    for i in range(7, 40000, 997):  # multi-line records, some across block boundaries
        lines[i] = f'{i + 1},"Name\r\n{i + 1}",2021-03-04T05:06:07Z,1,1'
    data = ("\r\n".join(lines) + "\r\n").encode()

    async def chunks() -> Any:
        for start in range(0, len(data), 65_537):
            yield data[start : start + 65_537]

    response = await seeded.post(
        "/hr/hired_employees/csv", content=chunks(), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "received": 40000,
        "inserted": 39999,
        "rejected": [{"index": 12345, "errors": ["name is empty"]}],
        "rejected_count": 1,
    }
    page = (await seeded.get("/hr/hired_employees", params={"offset": 39990})).json()
    assert page["total"] == 39999
    assert page["items"][-1]["name"] == f"Name 40000 {'x' * 30}"
    page = (await seeded.get("/hr/hired_employees", params={"offset": 7, "limit": 1})).json()
    assert page["items"][0]["name"] == "Name\r\n8"


async def test_a_quote_left_open_makes_one_rejected_record_of_the_rest(
    seeded: httpx.AsyncClient,
) -> None:
    data = f'1,Ann,{T},1,1\n2,"open,{T},1,1\n3,Bo,{T},1,1\n\n4,Cy,{T},1,1\n'.encode()
    summary = await upload(seeded, "hired_employees", data)
    assert summary == {
        "received": 2,
        "inserted": 1,
        "rejected": [{"index": 1, "errors": ["malformed CSV quoting"]}],
        "rejected_count": 1,
    }


async def test_received_and_indexes_count_records_not_lines(
    seeded: httpx.AsyncClient,
) -> None:
    # The spreadsheet shape: CRLF between records, LF inside a quoted cell.
    records = [
        f'{i},"Line one\nline two",{T},1,1' if i % 2 else f"{i},Plain,{T},1,1" for i in range(1, 7)
    ]
    records[4] = '5,"bad\ndate",2021-13-01T00:00:00Z,1,1'
    summary = await upload(seeded, "hired_employees", "\r\n".join(records).encode() + b"\r\n")
    assert summary == {
        "received": 6,
        "inserted": 5,
        "rejected": [{"index": 4, "errors": [NOT_ISO]}],
        "rejected_count": 1,
    }
    stored = await rows_of(seeded, "hired_employees")
    assert [row["name"] for row in stored] == [
        "Line one\nline two", "Plain", "Line one\nline two", "Plain", "Plain"
    ]  # fmt: skip
