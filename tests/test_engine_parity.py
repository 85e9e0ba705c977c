"""The same answers on every engine: bad input is the same 422, good input comes back intact.

This module runs in each of CI's runs (SQLite, PostgreSQL, MariaDB), so one set of
expectations holds for all three: a NUL byte, an id beyond its column's range or an
over-long string is a 422 problem document (never a 500, never a silently cut value), and
4-byte UTF-8, case, accents and trailing spaces survive a round trip through every text field.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest

PROBLEM = "application/problem+json"
EMOJI = "🙂 𝄞 漢字 Ä a "  # 4-byte characters, accents, a trailing space


def assert_problem(response: httpx.Response, status: int = 422) -> dict[str, object]:
    """A problem document with a stable type, not an error page."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert isinstance(body["type"], str)
    assert body["status"] == status
    return body


async def _user(client: httpx.AsyncClient, name: str = "Ada") -> tuple[int, dict[str, str]]:
    email = f"parity-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct-horse-battery"
    created = await client.post("/users", json={"name": name, "email": email, "password": password})
    assert created.status_code == 201, created.text
    token = await client.post("/auth/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    return created.json()["id"], {"Authorization": f"Bearer {token.json()['access_token']}"}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a\x00b"},
        {"content": "\x00"},
        {"description": "x" * 10_001},
        {"name": "x" * 256},
    ],
    ids=["nul-name", "nul-content", "long-description", "long-name"],
)
async def test_bad_template_fields_are_422(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    first = assert_problem(await client.post("/templates", json=body))
    created = await client.post("/templates", json={"name": "ok"})
    assert created.status_code == 201, created.text
    templateid = created.json()["templateid"]
    second = assert_problem(await client.patch(f"/templates/{templateid}", json=body))
    assert first["type"] == second["type"]
    unchanged = await client.get(f"/templates/{templateid}")
    assert unchanged.json()["name"] == "ok"


async def test_template_fields_round_trip_exactly(client: httpx.AsyncClient) -> None:
    body = {"name": EMOJI, "description": EMOJI * 100, "content": EMOJI * 5000}
    created = await client.post("/templates", json=body)
    assert created.status_code == 201, created.text
    read = (await client.get(f"/templates/{created.json()['templateid']}")).json()
    assert {k: read[k] for k in body} == body
    # The exact name (with its trailing space) matches itself only.
    assert (await client.get("/templates", params={"name": EMOJI})).json()["total"] == 1
    assert (await client.get("/templates", params={"name": EMOJI.rstrip()})).json()["total"] == 0
    assert (await client.get("/templates", params={"name": EMOJI.lower()})).json()["total"] == 0
    created_at = datetime.fromisoformat(read["created"].replace("Z", "+00:00"))
    assert created_at.utcoffset() is not None
    assert created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


async def test_template_list_total_and_order_agree(client: httpx.AsyncClient) -> None:
    names = ["b", "B", "é", "e", "🙂", "a"]
    for name in names:
        assert (await client.post("/templates", json={"name": name})).status_code == 201
    page = (await client.get("/templates", params={"limit": 4, "offset": 2})).json()
    assert page["total"] == len(names)
    assert [item["name"] for item in page["items"]] == names[2:]  # by tidx, i.e. creation


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a\x00b", "email": "nul@example.com", "password": "correct-horse-battery"},
        {"name": "x" * 201, "email": "long@example.com", "password": "correct-horse-battery"},
        {"name": "ok", "email": ("x" * 320) + "@example.com", "password": "correct-horse-b"},
    ],
    ids=["nul-name", "long-name", "long-email"],
)
async def test_bad_user_fields_are_422(
    anon_client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    assert_problem(await anon_client.post("/users", json=body))


async def test_user_and_certificate_text_round_trips(anon_client: httpx.AsyncClient) -> None:
    user_id, headers = await _user(anon_client, name=EMOJI)
    me = (await anon_client.get(f"/users/{user_id}", headers=headers)).json()
    assert me["name"] == EMOJI


@pytest.mark.parametrize("bad_id", [str(2**63), str(2**64), "-1", "0"])
async def test_ids_beyond_the_column_are_422(anon_client: httpx.AsyncClient, bad_id: str) -> None:
    user_id, headers = await _user(anon_client)
    for path in (f"/users/{bad_id}", f"/users/{user_id}/certificates/{bad_id}"):
        assert_problem(await anon_client.get(path, headers=headers))


async def test_unknown_template_and_bad_uuid(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"/templates/{uuid.uuid4()}"), 404)
    assert_problem(await client.get("/templates/not-a-uuid"))
