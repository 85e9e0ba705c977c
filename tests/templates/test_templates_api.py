"""The templates API over HTTP: CRUD, pagination, ETags and preconditions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx

PROBLEM = "application/problem+json"


async def _create(client: httpx.AsyncClient, **fields: str) -> dict[str, object]:
    response = await client.post("/templates", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_create_returns_the_full_record_and_location(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/templates", json={"name": "welcome", "description": "d", "content": "Hi {{ name }}"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "tidx",
        "templateid",
        "name",
        "description",
        "content",
        "created",
        "modified",
    }
    assert body["name"] == "welcome"
    assert body["description"] == "d"
    assert body["content"] == "Hi {{ name }}"
    assert isinstance(body["tidx"], int)
    uuid.UUID(body["templateid"])
    assert body["created"] == body["modified"]
    datetime.fromisoformat(body["created"])
    assert response.headers["location"] == f"/templates/{body['templateid']}"
    assert response.headers["etag"].startswith('"')
    fetched = await client.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_fields_default_to_empty_strings(client: httpx.AsyncClient) -> None:
    body = await _create(client)
    assert (body["name"], body["description"], body["content"]) == ("", "", "")


async def test_list_is_paginated_and_filtered_by_name(client: httpx.AsyncClient) -> None:
    for name in ("a", "b", "a", "c", "a"):
        await _create(client, name=name, content=name)
    page = (await client.get("/templates", params={"limit": 2, "offset": 1})).json()
    assert page["total"] == 5
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [item["name"] for item in page["items"]] == ["b", "a"]
    only_a = (await client.get("/templates", params={"name": "a"})).json()
    assert only_a["total"] == 3
    assert {item["name"] for item in only_a["items"]} == {"a"}
    tidxs = [item["tidx"] for item in only_a["items"]]
    assert tidxs == sorted(tidxs)
    none = (await client.get("/templates", params={"name": "zzz"})).json()
    assert none == {"items": [], "total": 0, "limit": 50, "offset": 0}


async def test_list_limits_are_validated(client: httpx.AsyncClient) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 2**63}):
        response = await client.get("/templates", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == PROBLEM


async def test_put_replaces_and_patch_changes_only_given_fields(
    client: httpx.AsyncClient,
) -> None:
    created = await _create(client, name="n", description="d", content="c")
    url = f"/templates/{created['templateid']}"
    patched = await client.patch(url, json={"content": "c2"})
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["content"]) == ("n", "c2")
    replaced = await client.put(url, json={"name": "n3"})
    assert replaced.status_code == 200
    body = replaced.json()
    assert (body["name"], body["description"], body["content"]) == ("n3", "", "")
    assert body["tidx"] == created["tidx"]
    assert body["created"] == created["created"]
    assert (await client.get(url)).json() == body


async def test_modified_changes_on_every_update(client: httpx.AsyncClient) -> None:
    created = await _create(client, name="n")
    url = f"/templates/{created['templateid']}"
    seen = [datetime.fromisoformat(str(created["modified"]))]
    # Back to back (same millisecond on a fast machine) and even with identical content.
    for body in ({"name": "n"}, {"name": "n"}, {}):
        response = await client.patch(url, json=body)
        assert response.status_code == 200
        seen.append(datetime.fromisoformat(response.json()["modified"]))
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert response.json()["created"] == created["created"]


async def test_delete_then_gone(client: httpx.AsyncClient) -> None:
    created = await _create(client)
    url = f"/templates/{created['templateid']}"
    assert (await client.get(url)).status_code == 200  # cached now
    deleted = await client.delete(url)
    assert deleted.status_code == 204
    assert deleted.content == b""
    missing = await client.get(url)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    assert (await client.delete(url)).status_code == 404
    assert (await client.patch(url, json={})).status_code == 404
    assert (await client.get("/templates")).json()["total"] == 0


async def test_invalid_ids_and_bodies_are_422(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = await client.request(method, "/templates/not-a-uuid", json={})
        assert response.status_code == 422, method
        assert response.headers["content-type"] == PROBLEM
    for body in (
        {"name": "x\x00y"},
        {"name": "x" * 256},
        {"unknown": 1},
        {"name": None},
        {"content": 5},
    ):
        response = await client.post("/templates", json=body)
        assert response.status_code == 422, body
    response = await client.post(
        "/templates", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    created = await _create(client)
    url = f"/templates/{created['templateid']}"
    assert (await client.patch(url, json={"name": None})).status_code == 422


async def test_etag_and_if_none_match(client: httpx.AsyncClient) -> None:
    created = await _create(client, content="v1")
    url = f"/templates/{created['templateid']}"
    first = await client.get(url)
    etag = first.headers["etag"]
    assert first.status_code == 200
    again = await client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert (await client.get(url, headers={"If-None-Match": f"W/{etag}"})).status_code == 304
    assert (await client.get(url, headers={"If-None-Match": '"other"'})).status_code == 200
    await client.patch(url, json={"content": "v2"})
    changed = await client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    listing = await client.get("/templates")
    assert listing.headers["etag"]
    cached_list = await client.get("/templates", headers={"If-None-Match": listing.headers["etag"]})
    assert cached_list.status_code == 304


async def test_if_match_refuses_stale_writes(client: httpx.AsyncClient) -> None:
    created = await _create(client, content="v1")
    url = f"/templates/{created['templateid']}"
    etag = (await client.get(url)).headers["etag"]
    ok = await client.patch(url, json={"content": "v2"}, headers={"If-Match": etag})
    assert ok.status_code == 200
    new_etag = ok.headers["etag"]
    assert new_etag != etag
    # The other client still holds the first ETag: all three writes are refused.
    for method, body in (("PATCH", {"content": "x"}), ("PUT", {"content": "x"}), ("DELETE", None)):
        stale = await client.request(method, url, json=body, headers={"If-Match": etag})
        assert stale.status_code == 412, method
        assert stale.headers["content-type"] == PROBLEM
        assert stale.json()["type"].endswith("/precondition-failed")
    assert (await client.get(url)).json()["content"] == "v2"
    assert (
        await client.put(url, json={"content": "v3"}, headers={"If-Match": "*"})
    ).status_code == 200
    current = (await client.get(url)).headers["etag"]
    assert (await client.delete(url, headers={"If-Match": f"W/{current}"})).status_code == 412
    assert (await client.delete(url, headers={"If-Match": current})).status_code == 204


async def test_concurrent_conditional_writes_have_one_winner(client: httpx.AsyncClient) -> None:
    created = await _create(client, content="start")
    url = f"/templates/{created['templateid']}"
    etag = (await client.get(url)).headers["etag"]
    responses = await asyncio.gather(
        *(
            client.patch(url, json={"content": f"writer {i}"}, headers={"If-Match": etag})
            for i in range(8)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) == {200, 412}
    winner = next(r for r in responses if r.status_code == 200)
    assert (await client.get(url)).json()["content"] == winner.json()["content"]


async def test_openapi_documents_the_templates_contract(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths["/templates"]) == {"get", "post"}
    assert set(paths["/templates/{templateid}"]) == {"get", "put", "patch", "delete"}
    post = paths["/templates"]["post"]
    assert "Location" in post["responses"]["201"]["headers"]
    assert "412" in paths["/templates/{templateid}"]["put"]["responses"]
    assert post["security"] == [{"ApiKey": []}]


async def test_longest_fields_fit_the_body_limit(client: httpx.AsyncClient) -> None:
    """Even fully \\u-escaped, a valid body is under the body limit: too long is 422, not 413."""
    import json

    from atrium.templates.schemas import CONTENT_MAX, DESCRIPTION_MAX, NAME_MAX

    def body(extra: int) -> bytes:
        fields = {
            "name": "\u0098" * NAME_MAX,
            "description": "\u0098" * DESCRIPTION_MAX,
            "content": "\u0098" * (CONTENT_MAX + extra),
        }
        return json.dumps(fields, ensure_ascii=True).encode()

    headers = {"content-type": "application/json"}
    assert (await client.post("/templates", content=body(0), headers=headers)).status_code == 201
    assert (await client.post("/templates", content=body(1), headers=headers)).status_code == 422
