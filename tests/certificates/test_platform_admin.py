"""A platform API key with the ``admin`` scope acts on any user; other keys do not."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.certificates.conftest import UserFactory, b64


async def test_admin_scoped_key_acts_on_any_user(
    clean: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, admin_api_key: str
) -> None:
    owner = await make_user()
    created = await client.post(
        f"/users/{owner.id}/certificates",
        json={"private_key": b64(b"k"), "body": "cert", "active": True},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    admin = {"X-API-KEY": admin_api_key}
    assert (await client.get(f"/users/{owner.id}", headers=admin)).json()["id"] == owner.id
    listed = await client.get(f"/users/{owner.id}/certificates", headers=admin)
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()["items"]] == [created.json()["id"]]


async def test_key_without_admin_scope_is_not_an_administrator(
    clean: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner = await make_user()
    key, _ = await clean.state.api_keys.create("reader", ("templates:read",))
    response = await client.get(f"/users/{owner.id}", headers={"X-API-KEY": key})
    assert response.status_code == 401  # no bearer token and not an admin: unauthenticated
