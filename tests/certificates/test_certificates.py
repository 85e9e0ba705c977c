"""Certificates over HTTP: create, list and filter, read, private key, (de)activate, delete."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.certificates.conftest import UserFactory, add_certificate, b64

PROBLEM = "application/problem+json"


async def test_create_answers_id_and_owner(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    response = await client.post(
        f"/users/{user.id}/certificates",
        json={"private_key": b64(b"key"), "body": "cert body", "active": True},
        headers=user.headers,
    )
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "user_id": user.id}
    assert response.headers["location"] == f"/users/{user.id}/certificates/{body['id']}"


@pytest.mark.parametrize(
    "private_key",
    [
        "not base64!",
        "c2VjcmV0",  # valid
        "c2VjcmV",  # missing padding
        "c2Vj\ncmV0",  # whitespace
        "",
        "c2VjcmV0=",  # stray padding
        "YQ=",  # wrong padding length
        "YR==",  # non-canonical trailing bits
        "c2Vj-mV0",  # URL-safe alphabet
        "c2VjcmV0\x00",
    ],
)
async def test_private_key_must_be_strict_base64(
    client: httpx.AsyncClient, make_user: UserFactory, private_key: str
) -> None:
    user = await make_user()
    response = await client.post(
        f"/users/{user.id}/certificates",
        json={"private_key": private_key, "body": "cert", "active": True},
        headers=user.headers,
    )
    if private_key == "c2VjcmV0":
        assert response.status_code == 201
    else:
        assert response.status_code == 422, private_key
        assert response.headers["content-type"] == PROBLEM
        assert private_key not in response.text or not private_key


@pytest.mark.parametrize(
    "payload",
    [
        {"private_key": "c2VjcmV0", "body": "cert", "active": "true"},
        {"private_key": "c2VjcmV0", "body": "ce\x00rt", "active": True},
        {"private_key": "c2VjcmV0", "body": "", "active": True},
        {"private_key": "c2VjcmV0", "active": True},
        {"body": "cert", "active": True},
        {"private_key": "c2VjcmV0", "body": "cert", "active": True, "owner": 2},
    ],
)
async def test_invalid_certificate_is_422(
    client: httpx.AsyncClient, make_user: UserFactory, payload: dict[str, object]
) -> None:
    user = await make_user()
    response = await client.post(
        f"/users/{user.id}/certificates", json=payload, headers=user.headers
    )
    assert response.status_code == 422


async def test_list_filters_by_active_and_paginates(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    ids = [await add_certificate(client, user, body=f"c{i}", active=i % 2 == 0) for i in range(5)]
    url = f"/users/{user.id}/certificates"

    everything = (await client.get(url, headers=user.headers)).json()
    assert everything["total"] == 5
    assert [item["id"] for item in everything["items"]] == ids
    assert everything["items"][0] == {"id": ids[0], "active": True, "body": "c0"}

    active = (await client.get(url, params={"active": "true"}, headers=user.headers)).json()
    assert [item["id"] for item in active["items"]] == [ids[0], ids[2], ids[4]]
    assert all(item["active"] for item in active["items"])
    inactive = (await client.get(url, params={"active": "false"}, headers=user.headers)).json()
    assert [item["id"] for item in inactive["items"]] == [ids[1], ids[3]]

    page = (await client.get(url, params={"limit": 2, "offset": 2}, headers=user.headers)).json()
    assert page == {
        "items": everything["items"][2:4],
        "total": 5,
        "limit": 2,
        "offset": 2,
    }
    for item in everything["items"]:
        assert "private_key" not in item


@pytest.mark.parametrize(
    "params",
    [
        {"active": "maybe"},
        {"active": "1"},
        {"active": "True"},
        {"active": ""},
        {"limit": 0},
        {"limit": 101},
        {"offset": -1},
    ],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, params: dict[str, object]
) -> None:
    user = await make_user()
    response = await client.get(
        f"/users/{user.id}/certificates", params=params, headers=user.headers
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_get_one_and_private_key_round_trip(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    key = bytes(range(256)) * 4
    cid = await add_certificate(client, user, body="the body", private_key=key)
    one = await client.get(f"/users/{user.id}/certificates/{cid}", headers=user.headers)
    assert one.json() == {"id": cid, "user_id": user.id, "active": True, "body": "the body"}
    assert "private_key" not in one.text
    secret = await client.get(
        f"/users/{user.id}/certificates/{cid}/private-key", headers=user.headers
    )
    assert secret.status_code == 200
    assert base64.b64decode(secret.json()["private_key"]) == key
    assert secret.headers["cache-control"] == "no-store"


async def test_other_users_certificates_are_404(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    ada, bob = await make_user(), await make_user()
    cid = await add_certificate(client, bob)
    for method, path in (
        ("GET", f"/users/{bob.id}/certificates/{cid}"),
        ("GET", f"/users/{bob.id}/certificates/{cid}/private-key"),
        ("PATCH", f"/users/{bob.id}/certificates/{cid}"),
        ("PATCH", f"/users/{bob.id}/certificates/{cid}/active"),
        ("DELETE", f"/users/{bob.id}/certificates/{cid}"),
        ("POST", f"/users/{bob.id}/certificates"),
        # Ada's own path with Bob's certificate id: still not hers.
        ("GET", f"/users/{ada.id}/certificates/{cid}"),
        ("GET", f"/users/{ada.id}/certificates/{cid}/private-key"),
        ("PATCH", f"/users/{ada.id}/certificates/{cid}/active"),
        ("DELETE", f"/users/{ada.id}/certificates/{cid}"),
    ):
        json = (
            {"private_key": "c2VjcmV0", "body": "x", "active": True}
            if method == "POST"
            else {"active": False}
        )
        response = await client.request(method, path, headers=ada.headers, json=json)
        assert response.status_code == 404, (method, path)
    still = await client.get(f"/users/{bob.id}/certificates/{cid}", headers=bob.headers)
    assert still.json()["active"] is True


@pytest.mark.parametrize("suffix", ["", "/active"])
async def test_activate_and_deactivate(
    client: httpx.AsyncClient, make_user: UserFactory, suffix: str
) -> None:
    user = await make_user()
    cid = await add_certificate(client, user)
    url = f"/users/{user.id}/certificates/{cid}{suffix}"
    off = await client.patch(url, json={"active": False}, headers=user.headers)
    assert off.status_code == 200
    assert off.json()["active"] is False
    listed = await client.get(
        f"/users/{user.id}/certificates", params={"active": "true"}, headers=user.headers
    )
    assert listed.json()["total"] == 0
    on = await client.patch(url, json={"active": True}, headers=user.headers)
    assert on.json() == {"id": cid, "user_id": user.id, "active": True, "body": on.json()["body"]}
    assert (await client.patch(url, json={"active": "no"}, headers=user.headers)).status_code == 422
    assert (await client.patch(url, json={}, headers=user.headers)).status_code == 422


async def test_missing_certificate_is_404(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    base = f"/users/{user.id}/certificates/987654"
    assert (await client.get(base, headers=user.headers)).status_code == 404
    assert (
        await client.patch(base, json={"active": True}, headers=user.headers)
    ).status_code == 404
    assert (await client.delete(base, headers=user.headers)).status_code == 404
    assert (await client.get(base + "/private-key", headers=user.headers)).status_code == 404


async def test_delete_certificate(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    keep, drop = await add_certificate(client, user), await add_certificate(client, user)
    response = await client.delete(f"/users/{user.id}/certificates/{drop}", headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    listed = await client.get(f"/users/{user.id}/certificates", headers=user.headers)
    assert [item["id"] for item in listed.json()["items"]] == [keep]
    gone = await client.get(f"/users/{user.id}/certificates/{drop}", headers=user.headers)
    assert gone.status_code == 404


async def test_openapi_documents_the_endpoints(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        "/users": {"post"},
        "/auth/token": {"post"},
        "/users/{user_id}": {"get", "patch", "delete"},
        "/users/{user_id}/certificates": {"get", "post"},
        "/users/{user_id}/certificates/{certificate_id}": {"get", "patch", "delete"},
        "/users/{user_id}/certificates/{certificate_id}/private-key": {"get"},
        "/users/{user_id}/certificates/{certificate_id}/active": {"patch"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            operation = paths[path][method]
            assert operation.get("description"), (path, method)
            assert "422" in operation["responses"]
            if path not in ("/users", "/auth/token"):
                assert "401" in operation["responses"], (path, method)
                assert operation["security"]
    schemes = schema["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/auth/token"
    assert "AdminApiKey" not in schemes  # one header, one scheme: the platform's
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": schemes["ApiKey"]["description"],
    }
    assert "409" in paths["/users"]["post"]["responses"]
    create = paths["/users/{user_id}/certificates"]["post"]
    assert "415" in create["responses"]
    assert "406" in create["responses"]
