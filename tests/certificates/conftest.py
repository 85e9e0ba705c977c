"""Helpers for the certificates tests: registered users with tokens, an admin key."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

PASSWORD = "correct-horse-battery"
ADMIN_KEY = "test-admin-key-0123456789"
_counter = itertools.count(1)


@dataclass
class TestUser:
    """A registered user and the headers that authenticate as them."""

    __test__ = False  # not a test class

    id: int
    email: str
    password: str
    headers: dict[str, str]


async def register(
    client: httpx.AsyncClient, name: str = "Ada Lovelace", password: str = PASSWORD
) -> TestUser:
    """Register a fresh user and log in."""
    email = f"user{next(_counter)}@example.com"
    created = await client.post("/users", json={"name": name, "email": email, "password": password})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    token = await client.post("/auth/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return TestUser(id=user_id, email=email, password=password, headers=headers)


UserFactory = Callable[..., Awaitable[TestUser]]


@pytest.fixture
def client(anon_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Certificates are guarded by users' bearer tokens: act without the suite's admin key."""
    return anon_client


@pytest.fixture
def make_user(client: httpx.AsyncClient) -> UserFactory:
    """``await make_user()``: a new user with a valid token."""

    async def make(name: str = "Ada Lovelace") -> TestUser:
        return await register(client, name)

    return make


@pytest.fixture
def admin_headers(clean: FastAPI) -> Iterator[dict[str, str]]:
    """Headers of an administrator (the app is given an admin key for this test)."""
    original = clean.state.settings
    clean.state.settings = original.model_copy(update={"admin_api_key": SecretStr(ADMIN_KEY)})
    try:
        yield {"X-API-KEY": ADMIN_KEY}
    finally:
        clean.state.settings = original


def b64(data: bytes) -> str:
    """Standard padded base64."""
    return base64.b64encode(data).decode()


async def add_certificate(
    client: httpx.AsyncClient,
    user: TestUser,
    *,
    body: str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    private_key: bytes = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----",
    active: bool = True,
) -> int:
    """Create a certificate for ``user``; its id."""
    response = await client.post(
        f"/users/{user.id}/certificates",
        json={"private_key": b64(private_key), "body": body, "active": active},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    certificate_id: int = response.json()["id"]
    return certificate_id
