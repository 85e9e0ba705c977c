"""Users and login over HTTP: registration, ownership, tokens, admin key, validation."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.certificates.models import User
from tests.certificates.conftest import PASSWORD, UserFactory, add_certificate, register

PROBLEM = "application/problem+json"


async def test_register_returns_only_the_id(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["id"]
    assert isinstance(body["id"], int)
    assert response.headers["location"] == f"/users/{body['id']}"


async def test_password_is_hashed_never_returned_or_logged(
    client: httpx.AsyncClient, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "very-secret-password-42"
    with caplog.at_level(logging.DEBUG):
        created = await client.post(
            "/users", json={"name": "Ada", "email": "ada@example.com", "password": secret}
        )
        user_id = created.json()["id"]
        token = await client.post(
            "/auth/token", data={"username": "ada@example.com", "password": secret}
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        shown = await client.get(f"/users/{user_id}", headers=headers)
        bad = await client.post("/users", json={"name": "", "email": "x@y.z", "password": secret})
    assert bad.status_code == 422
    assert secret not in bad.text
    assert shown.json() == {"id": user_id, "name": "Ada", "email": "ada@example.com"}
    assert secret not in caplog.text
    stored = await session.scalar(select(User.password_hash).where(User.id == user_id))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert secret not in stored


async def test_duplicate_email_is_409_ignoring_case(client: httpx.AsyncClient) -> None:
    first = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    assert (await client.post("/users", json=first)).status_code == 201
    again = await client.post("/users", json={**first, "email": "ADA@Example.com"})
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    assert again.json()["type"] == "https://atrium.dev/problems/email-taken"


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "Ada", "email": "not-an-email", "password": PASSWORD},
        {"name": "Ada", "email": "ada@example.com", "password": "short"},
        {"name": "Ada", "email": "ada@example.com"},
        {"name": "A\x00da", "email": "ada@example.com", "password": PASSWORD},
        {"name": "Ada", "email": "ada@example.com", "password": "pass\x00word-long"},
        {"name": "Ada", "email": "ada@example.com", "password": PASSWORD, "admin": True},
        {"name": 5, "email": "ada@example.com", "password": PASSWORD},
    ],
)
async def test_invalid_registration_is_422(client: httpx.AsyncClient, payload: object) -> None:
    response = await client.post("/users", json=payload)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_login_with_wrong_password_or_unknown_email_is_401(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    for form in (
        {"username": user.email, "password": "wrong-password"},
        {"username": "nobody@example.com", "password": PASSWORD},
    ):
        response = await client.post("/auth/token", data=form)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"] == "incorrect email or password"


async def test_login_is_case_insensitive_and_answers_oauth2_shape(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    response = await client.post(
        "/auth/token", data={"username": user.email.upper(), "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["access_token"].count(".") == 2
    assert response.headers["cache-control"] == "no-store"


async def test_login_with_nul_byte_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/token", data={"username": "a\x00@example.com", "password": PASSWORD}
    )
    assert response.status_code == 422


async def test_user_sees_only_themself(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    ada, bob = await make_user("Ada"), await make_user("Bob")
    mine = await client.get(f"/users/{ada.id}", headers=ada.headers)
    assert mine.status_code == 200
    for method, path, kwargs in (
        ("GET", f"/users/{bob.id}", {}),
        ("PATCH", f"/users/{bob.id}", {"json": {"name": "Mallory"}}),
        ("DELETE", f"/users/{bob.id}", {}),
        ("GET", f"/users/{bob.id}/certificates", {}),
    ):
        response = await client.request(method, path, headers=ada.headers, **kwargs)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == PROBLEM
    assert (await client.get(f"/users/{bob.id}", headers=bob.headers)).json()["name"] == "Bob"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/users/1"),
        ("PATCH", "/users/1"),
        ("DELETE", "/users/1"),
        ("POST", "/users/1/certificates"),
        ("GET", "/users/1/certificates"),
        ("GET", "/users/1/certificates/1"),
        ("GET", "/users/1/certificates/1/private-key"),
        ("PATCH", "/users/1/certificates/1"),
        ("PATCH", "/users/1/certificates/1/active"),
        ("DELETE", "/users/1/certificates/1"),
    ],
)
async def test_unauthenticated_is_401_with_bearer_challenge(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"active": True})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-token", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer "],
)
async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, make_user: UserFactory, authorization: str
) -> None:
    user = await make_user()
    response = await client.get(f"/users/{user.id}", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_tampered_token_is_401(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    ada, bob = await make_user(), await make_user()
    header, _payload, signature = ada.headers["Authorization"].removeprefix("Bearer ").split(".")
    _, bob_payload, _ = bob.headers["Authorization"].removeprefix("Bearer ").split(".")
    forged = f"Bearer {header}.{bob_payload}.{signature}"
    response = await client.get(f"/users/{bob.id}", headers={"Authorization": forged})
    assert response.status_code == 401
    assert "invalid_token" in response.headers["www-authenticate"]


async def test_password_change_revokes_older_tokens(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    changed = await client.patch(
        f"/users/{user.id}", json={"password": "a-brand-new-password"}, headers=user.headers
    )
    assert changed.status_code == 200
    assert (await client.get(f"/users/{user.id}", headers=user.headers)).status_code == 401
    fresh = await client.post(
        "/auth/token", data={"username": user.email, "password": "a-brand-new-password"}
    )
    headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert (await client.get(f"/users/{user.id}", headers=headers)).status_code == 200


async def test_patch_user_changes_fields_and_checks_email(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    ada, bob = await make_user("Ada"), await make_user("Bob")
    renamed = await client.patch(
        f"/users/{ada.id}",
        json={"name": "Ada King", "email": "ada.king@example.com"},
        headers=ada.headers,
    )
    assert renamed.status_code == 200
    assert renamed.json() == {"id": ada.id, "name": "Ada King", "email": "ada.king@example.com"}
    assert (await client.get(f"/users/{ada.id}", headers=ada.headers)).json()["name"] == "Ada King"
    taken = await client.patch(
        f"/users/{ada.id}", json={"email": bob.email.upper()}, headers=ada.headers
    )
    assert taken.status_code == 409
    assert (
        await client.patch(f"/users/{ada.id}", json={"name": ""}, headers=ada.headers)
    ).status_code == 422


async def test_delete_user_cascades_to_certificates_and_revokes_tokens(
    client: httpx.AsyncClient, make_user: UserFactory, session: AsyncSession
) -> None:
    from atrium.certificates.models import Certificate

    user = await make_user()
    await add_certificate(client, user)
    await add_certificate(client, user)
    assert (await client.delete(f"/users/{user.id}", headers=user.headers)).status_code == 204
    left = (
        await session.scalars(select(Certificate.id).where(Certificate.user_id == user.id))
    ).all()
    assert left == []
    assert (await client.get(f"/users/{user.id}", headers=user.headers)).status_code == 401
    again = await client.post("/auth/token", data={"username": user.email, "password": PASSWORD})
    assert again.status_code == 401


async def test_new_user_never_inherits_a_deleted_users_token(client: httpx.AsyncClient) -> None:
    first = await register(client, "First")
    assert (await client.delete(f"/users/{first.id}", headers=first.headers)).status_code == 204
    second = await register(client, "Second")
    assert second.id != first.id
    response = await client.get(f"/users/{second.id}", headers=first.headers)
    assert response.status_code in (401, 404)


async def test_admin_key_acts_on_any_user(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user("Ada")
    assert (await client.get(f"/users/{user.id}", headers=admin_headers)).json()["name"] == "Ada"
    certificate = await client.post(
        f"/users/{user.id}/certificates",
        json={"private_key": "c2VjcmV0", "body": "cert", "active": True},
        headers=admin_headers,
    )
    assert certificate.status_code == 201
    listed = await client.get(f"/users/{user.id}/certificates", headers=admin_headers)
    assert listed.json()["total"] == 1
    # The private key stays the owner's alone.
    cid = certificate.json()["id"]
    key = await client.get(
        f"/users/{user.id}/certificates/{cid}/private-key", headers=admin_headers
    )
    assert key.status_code == 403
    assert (await client.get("/users/999999", headers=admin_headers)).status_code == 404
    assert (
        await client.get("/users/999999/certificates", headers=admin_headers)
    ).status_code == 404
    assert (await client.delete(f"/users/{user.id}", headers=admin_headers)).status_code == 204


async def test_wrong_admin_key_grants_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    user = await make_user()
    wrong = {"X-API-KEY": "not-the-admin-key"}
    assert (await client.get(f"/users/{user.id}", headers=wrong)).status_code == 401
    # A non-admin key beside a valid token is not an error: the token decides.
    both = {**wrong, **user.headers}
    assert (await client.get(f"/users/{user.id}", headers=both)).status_code == 200


async def test_no_admin_key_configured_means_no_admin(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    assert app.state.settings.admin_api_key is None
    user = await make_user()
    response = await client.get(f"/users/{user.id}", headers={"X-API-KEY": ""})
    assert response.status_code == 401


@pytest.mark.parametrize("user_id", ["0", "-1", str(2**63), "abc", "1.5"])
async def test_out_of_range_ids_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, user_id: str
) -> None:
    user = await make_user()
    for path in (f"/users/{user_id}", f"/users/{user.id}/certificates/{user_id}"):
        response = await client.get(path, headers=user.headers)
        assert response.status_code == 422, path


async def test_concurrent_registrations_of_one_email_give_one_user(
    client: httpx.AsyncClient,
) -> None:
    import asyncio

    payload = {"name": "Ada", "email": "race@example.com", "password": PASSWORD}
    responses = await asyncio.gather(*(client.post("/users", json=payload) for _ in range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409]
