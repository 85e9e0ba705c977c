"""Backups to Avro and restores: round trip, tampering, atomicity, foreign keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import httpx
import pytest

from atrium.settings import Settings
from tests.hr.conftest import DEPARTMENTS, JOBS, employee, post_batch, rows_of

PROBLEM = "application/problem+json"
TABLES = ("departments", "jobs", "hired_employees")


async def snapshot(client: httpx.AsyncClient) -> dict[str, list[dict[str, Any]]]:
    """Every row of every HR table."""
    return {table: await rows_of(client, table) for table in TABLES}


async def make_backup(client: httpx.AsyncClient) -> dict[str, Any]:
    """POST /hr/backups, which must succeed; the manifest."""
    response = await client.post("/hr/backups")
    assert response.status_code == 201, response.text
    manifest: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/hr/backups/{manifest['id']}"
    return manifest


async def wipe(client: httpx.AsyncClient) -> None:
    """Empty the tables through a restore-independent path (the test fixture's wipe)."""
    from tests.conftest import _wipe

    await _wipe(client._transport.app)  # type: ignore[attr-defined]


@pytest.fixture
def backup_dir(settings: Settings) -> Path:
    """Where this session's backups are written."""
    return settings.resolved_backup_dir


@pytest.fixture
async def filled(seeded: httpx.AsyncClient) -> httpx.AsyncClient:
    """Departments, jobs and a few employees, one with a non-ASCII name and micro-seconds."""
    rows = [
        employee(1, 1, 1),
        employee(2, 2, 2, name="Zoë O'Neil, Jr.", datetime="2021-03-04T05:06:07.123456Z"),
        employee(3, 3, 1, datetime="1999-12-31T23:59:59+02:00"),
    ]
    assert (await post_batch(seeded, "hired_employees", rows))["inserted"] == 3
    return seeded


async def test_round_trip_backup_wipe_restore(filled: httpx.AsyncClient, backup_dir: Path) -> None:
    before = await snapshot(filled)
    manifest = await make_backup(filled)
    assert {name: t["rows"] for name, t in manifest["tables"].items()} == {
        "departments": 3,
        "jobs": 2,
        "hired_employees": 3,
    }
    folder = backup_dir / manifest["id"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "departments.avro",
        "hired_employees.avro",
        "jobs.avro",
        "manifest.json",
    ]
    with (folder / "hired_employees.avro").open("rb") as handle:
        reader = fastavro.reader(handle)
        fields = {f["name"]: f["type"] for f in reader.writer_schema["fields"]}  # type: ignore[index]
        records = list(reader)
    assert fields["datetime"] == {"type": "long", "logicalType": "timestamp-micros"}
    assert fields["id"] == "int"  # no nullable unions
    assert len(records) == 3

    await wipe(filled)
    assert (await snapshot(filled))["hired_employees"] == []
    response = await filled.post(f"/hr/backups/{manifest['id']}/restore")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "backup": manifest["id"],
        "restored": {"departments": 3, "jobs": 2, "hired_employees": 3},
    }
    assert await snapshot(filled) == before

    listed = (await filled.get("/hr/backups")).json()
    assert manifest["id"] in [b["id"] for b in listed["items"]]
    shown = await filled.get(f"/hr/backups/{manifest['id']}")
    assert shown.json() == manifest


async def test_restore_replaces_current_contents(filled: httpx.AsyncClient) -> None:
    before = await snapshot(filled)
    manifest = await make_backup(filled)
    await post_batch(filled, "hired_employees", [employee(50), employee(51)])
    await post_batch(filled, "departments", [{"id": 9, "department": "Later"}])
    response = await filled.post(f"/hr/backups/{manifest['id']}/restore", json={})
    assert response.status_code == 200, response.text
    assert await snapshot(filled) == before


async def test_tampered_file_is_refused_and_nothing_changes(
    filled: httpx.AsyncClient, backup_dir: Path
) -> None:
    manifest = await make_backup(filled)
    await post_batch(filled, "hired_employees", [employee(60)])
    current = await snapshot(filled)
    target = backup_dir / manifest["id"] / "jobs.avro"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    response = await filled.post(f"/hr/backups/{manifest['id']}/restore")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/backup-corrupt")
    assert "sha256" in response.json()["detail"]
    assert await snapshot(filled) == current


async def test_bad_avro_with_a_matching_manifest_is_refused(
    filled: httpx.AsyncClient, backup_dir: Path
) -> None:
    # An attacker who also rewrites the manifest still cannot feed us garbage.
    manifest = await make_backup(filled)
    folder = backup_dir / manifest["id"]
    junk = b"not avro at all"
    (folder / "departments.avro").write_bytes(junk)
    import hashlib

    stored = json.loads((folder / "manifest.json").read_text())
    stored["tables"]["departments"].update(sha256=hashlib.sha256(junk).hexdigest(), bytes=len(junk))
    (folder / "manifest.json").write_text(json.dumps(stored))
    current = await snapshot(filled)
    response = await filled.post(f"/hr/backups/{manifest['id']}/restore")
    assert response.status_code == 409
    assert response.json()["type"].endswith("/backup-corrupt")
    assert await snapshot(filled) == current


async def test_missing_file_is_refused(filled: httpx.AsyncClient, backup_dir: Path) -> None:
    manifest = await make_backup(filled)
    (backup_dir / manifest["id"] / "hired_employees.avro").unlink()
    response = await filled.post(f"/hr/backups/{manifest['id']}/restore")
    assert response.status_code == 409
    assert "missing" in response.json()["detail"]


async def test_restore_breaking_foreign_keys_leaves_old_contents(
    client: httpx.AsyncClient,
) -> None:
    await post_batch(client, "departments", DEPARTMENTS[:1])
    await post_batch(client, "jobs", JOBS[:1])
    manifest = await make_backup(client)  # departments {1}, jobs {1}, no employees
    await post_batch(client, "departments", DEPARTMENTS[1:])
    await post_batch(client, "hired_employees", [employee(1, department_id=3)])
    current = await snapshot(client)
    response = await client.post(
        f"/hr/backups/{manifest['id']}/restore", json={"tables": ["departments"]}
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/restore-conflict")
    assert await snapshot(client) == current


async def test_partial_restore(filled: httpx.AsyncClient) -> None:
    manifest = await make_backup(filled)
    await post_batch(filled, "hired_employees", [employee(70)])
    await post_batch(filled, "jobs", [{"id": 9, "job": "Kept"}])
    response = await filled.post(
        f"/hr/backups/{manifest['id']}/restore", json={"tables": ["hired_employees"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["restored"] == {"hired_employees": 3}
    assert [r["id"] for r in await rows_of(filled, "hired_employees")] == [1, 2, 3]
    assert [r["id"] for r in await rows_of(filled, "jobs")] == [1, 2, 9]


async def test_restoring_employees_alone_needs_their_departments(
    filled: httpx.AsyncClient,
) -> None:
    manifest = await make_backup(filled)
    await wipe(filled)
    current = await snapshot(filled)
    response = await filled.post(
        f"/hr/backups/{manifest['id']}/restore", json={"tables": ["hired_employees"]}
    )
    assert response.status_code == 409
    assert response.json()["type"].endswith("/restore-conflict")
    assert await snapshot(filled) == current


@pytest.mark.parametrize(
    "bad_id",
    ["..", "..%2F..%2Fetc", "20211107T024842Z-3fa85f6", "x" * 30, "20211107T024842Z-3FA85F64"],
)
async def test_backup_ids_are_validated(client: httpx.AsyncClient, bad_id: str) -> None:
    for response in (
        await client.get(f"/hr/backups/{bad_id}"),
        await client.post(f"/hr/backups/{bad_id}/restore"),
    ):
        assert response.status_code in (404, 405, 422), bad_id  # 405: ".." normalised away
        assert response.headers["content-type"] == PROBLEM


async def test_unknown_backup_is_404(client: httpx.AsyncClient) -> None:
    missing = "20000101T000000Z-00000000"
    for response in (
        await client.get(f"/hr/backups/{missing}"),
        await client.post(f"/hr/backups/{missing}/restore"),
    ):
        assert response.status_code == 404
        assert response.json()["type"].endswith("/backup-not-found")


async def test_restore_body_is_validated(filled: httpx.AsyncClient) -> None:
    manifest = await make_backup(filled)
    for body in ({"tables": ["nope"]}, {"tables": []}, {"other": 1}):
        response = await filled.post(f"/hr/backups/{manifest['id']}/restore", json=body)
        assert response.status_code == 422, body


async def test_half_written_backup_is_not_listed(
    client: httpx.AsyncClient, backup_dir: Path
) -> None:
    manifest = await make_backup(client)
    orphan = backup_dir / "20000101T000000Z-deadbeef"
    orphan.mkdir()
    (orphan / "departments.avro").write_bytes(b"partial")
    listed = [b["id"] for b in (await client.get("/hr/backups")).json()["items"]]
    assert manifest["id"] in listed
    assert orphan.name not in listed
    assert (await client.get(f"/hr/backups/{orphan.name}")).status_code == 404


async def test_round_trip_in_many_chunks(
    filled: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atrium.hr import backup

    monkeypatch.setattr(backup, "FETCH_ROWS", 2)  # every table spans several chunks
    await post_batch(filled, "hired_employees", [employee(i, 1 + i % 3) for i in range(10, 17)])
    before = await snapshot(filled)
    manifest = await make_backup(filled)
    assert manifest["tables"]["hired_employees"]["rows"] == 10
    await wipe(filled)
    response = await filled.post(f"/hr/backups/{manifest['id']}/restore")
    assert response.status_code == 200, response.text
    assert await snapshot(filled) == before
