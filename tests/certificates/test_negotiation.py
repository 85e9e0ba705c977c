"""JSON only: 415 for a non-JSON body, 406 for an Accept without JSON, both as problems."""

from __future__ import annotations

import httpx
import pytest

from atrium.platform.negotiation import accepts_json, is_json_media_type
from tests.certificates.conftest import PASSWORD, UserFactory, add_certificate

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("", True),
        ("*/*", True),
        ("application/*", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("text/html, application/json;q=0.1", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("text/html", False),
        ("text/*", False),
        ("application/xml", False),
        ("application/json;q=0", False),
        ("*/*;q=0", False),
        ("*/*, application/json;q=0, application/problem+json;q=0", False),
        ("garbage", True),
    ],
)
def test_accepts_json(accept: str | None, ok: bool) -> None:
    assert accepts_json(accept) is ok


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonx", False),
    ],
)
def test_is_json_media_type(content_type: str, ok: bool) -> None:
    assert is_json_media_type(content_type) is ok


async def test_registration_with_form_body_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", data={"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "https://atrium.dev/problems/unsupported-media-type"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
async def test_certificate_bodies_must_be_json(
    client: httpx.AsyncClient, make_user: UserFactory, content_type: str | None
) -> None:
    user = await make_user()
    cid = await add_certificate(client, user)
    headers = dict(user.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    for method, path in (
        ("POST", f"/users/{user.id}/certificates"),
        ("PATCH", f"/users/{user.id}/certificates/{cid}"),
        ("PATCH", f"/users/{user.id}/certificates/{cid}/active"),
        ("PATCH", f"/users/{user.id}"),
    ):
        response = await client.request(method, path, content=b'{"active": false}', headers=headers)
        assert response.status_code == 415, (method, path)
        assert response.headers["content-type"] == PROBLEM


async def test_json_with_charset_is_accepted(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    cid = await add_certificate(client, user)
    response = await client.patch(
        f"/users/{user.id}/certificates/{cid}",
        content=b'{"active": false}',
        headers={**user.headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/json;q=0"])
async def test_accept_without_json_is_406(
    client: httpx.AsyncClient, make_user: UserFactory, accept: str
) -> None:
    user = await make_user()
    for method, path in (
        ("GET", f"/users/{user.id}"),
        ("GET", f"/users/{user.id}/certificates"),
        ("POST", "/users"),
        ("POST", "/auth/token"),
    ):
        response = await client.request(method, path, headers={**user.headers, "Accept": accept})
        assert response.status_code == 406, (method, path)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "https://atrium.dev/problems/not-acceptable"


@pytest.mark.parametrize(
    "accept", ["*/*", "application/*", "application/json", "application/problem+json"]
)
async def test_json_compatible_accept_is_served(
    client: httpx.AsyncClient, make_user: UserFactory, accept: str
) -> None:
    user = await make_user()
    response = await client.get(f"/users/{user.id}", headers={**user.headers, "Accept": accept})
    assert response.status_code == 200


async def test_login_takes_form_encoding(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    response = await client.post(
        "/auth/token",
        data={"username": user.email, "password": PASSWORD, "grant_type": "password"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
