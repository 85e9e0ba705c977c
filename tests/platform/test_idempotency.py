"""Idempotency-Key: replay, mismatch, in flight, failures, expiry, per-caller scope."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message, Receive, Scope, Send

from atrium.app import IDEMPOTENT_POSTS
from atrium.platform.apikeys import KeyStore
from atrium.platform.db import OWNED_SESSION
from atrium.platform.idempotency import IdempotencyMiddleware
from atrium.settings import Settings

PROBLEM = "application/problem+json"


def _replays() -> float:
    return REGISTRY.get_sample_value("atrium_idempotency_replays_total") or 0.0


async def _count(client: httpx.AsyncClient) -> int:
    total: int = (await client.get("/templates")).json()["total"]
    return total


async def test_retry_replays_the_first_response_and_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "create-welcome-1"}
    body = {"name": "welcome", "content": "Hi"}
    first = await client.post("/templates", json=body, headers=headers)
    assert first.status_code == 201
    replays = _replays()
    again = await client.post("/templates", json=body, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _replays() == replays + 1
    # JSON with its keys in another order is the same request.
    reordered = await client.post(
        "/templates",
        content=b'{"content": "Hi", "name": "welcome"}',
        headers={**headers, "content-type": "application/json"},
    )
    assert reordered.json() == first.json()
    assert await _count(client) == 1


async def test_same_key_with_another_body_is_422(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-422"}
    assert (await client.post("/templates", json={"name": "a"}, headers=headers)).status_code == 201
    other = await client.post("/templates", json={"name": "b"}, headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"] == PROBLEM
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert await _count(client) == 1


async def test_without_the_header_every_post_creates(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await client.post("/templates", json={"name": "a"})).status_code == 201
    assert await _count(client) == 2


async def test_keys_are_scoped_per_caller(clean: FastAPI, client: httpx.AsyncClient) -> None:
    store: KeyStore = clean.state.api_keys
    other_key, _ = await store.create("other", ("templates:write", "templates:read"))
    headers = {"Idempotency-Key": "shared-name"}
    mine = await client.post("/templates", json={"name": "x"}, headers=headers)
    transport = httpx.ASGITransport(app=clean)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"X-API-KEY": other_key}
    ) as other:
        theirs = await other.post("/templates", json={"name": "x"}, headers=headers)
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["templateid"] != mine.json()["templateid"]
    assert await _count(client) == 2


async def test_invalid_keys_are_422(client: httpx.AsyncClient) -> None:
    for value in ("", "has space", "x" * 256, "é"):
        response = await client.post(
            "/templates", json={}, headers={"Idempotency-Key": value.encode("utf-8")}
        )
        assert response.status_code == 422, value
        assert response.json()["type"].endswith("/invalid-idempotency-key")
    quoted = await client.post("/templates", json={}, headers={"Idempotency-Key": '"quoted"'})
    assert quoted.status_code == 201
    assert await _count(client) == 1


def test_applies_to_the_creating_posts_of_every_domain() -> None:
    patterns = [re.compile(p) for p in IDEMPOTENT_POSTS]

    def applies(path: str) -> bool:
        return any(p.fullmatch(path) for p in patterns)

    for path in ("/templates", "/hr/jobs/batch", "/users", "/users/7/certificates"):
        assert applies(path), path
    for path in ("/auth/token", "/hr/jobs/csv", "/templates/x", "/users/7"):
        assert not applies(path), path


# --- the middleware on a controllable application ------------------------------------------


class _Controlled:
    """An ASGI app whose answers a test scripts: status codes, and when to answer."""

    def __init__(self) -> None:
        self.calls = 0
        self.statuses: list[int] = []
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        message = await receive()
        self.bodies.append(message.get("body", b""))
        self.entered.set()
        await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 201
        if status == 599:
            raise RuntimeError("handler crashed")
        body = f'{{"call": {self.calls}}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"x-custom", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def _wrapped(clean: FastAPI, inner: _Controlled) -> AsyncIterator[httpx.AsyncClient]:
    middleware = IdempotencyMiddleware(
        inner, state=clean.state, settings=clean.state.settings, paths=[r"/things"]
    )
    transport = httpx.ASGITransport(app=middleware, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_same_key_while_the_first_runs_is_409(clean: FastAPI) -> None:
    inner = _Controlled()
    inner.release.clear()
    headers = {"Idempotency-Key": "slow"}
    async with _wrapped(clean, inner) as c:
        first = asyncio.create_task(c.post("/things", json={"a": 1}, headers=headers))
        await inner.entered.wait()
        busy = await c.post("/things", json={"a": 1}, headers=headers)
        assert busy.status_code == 409
        assert busy.headers["content-type"] == PROBLEM
        assert busy.json()["type"].endswith("/idempotency-key-in-flight")
        assert busy.headers["retry-after"] == "1"
        inner.release.set()
        assert (await first).status_code == 201
        replay = await c.post("/things", json={"a": 1}, headers=headers)
    assert replay.status_code == 201
    assert replay.json() == {"call": 1}
    assert replay.headers["x-custom"] == "1"
    assert inner.calls == 1
    assert inner.bodies == [b'{"a":1}']  # the application got the body the middleware read


async def test_server_errors_and_crashes_release_the_key(clean: FastAPI) -> None:
    inner = _Controlled()
    inner.statuses = [503, 599, 201]
    headers = {"Idempotency-Key": "retry-me"}
    async with _wrapped(clean, inner) as c:
        assert (await c.post("/things", json={}, headers=headers)).status_code == 503
        assert (await c.post("/things", json={}, headers=headers)).status_code == 500
        ok = await c.post("/things", json={}, headers=headers)
        assert ok.status_code == 201
        assert ok.json() == {"call": 3}
        replay = await c.post("/things", json={}, headers=headers)
    assert replay.json() == {"call": 3}
    assert inner.calls == 3


async def test_client_errors_are_remembered(clean: FastAPI) -> None:
    inner = _Controlled()
    inner.statuses = [409, 201]
    headers = {"Idempotency-Key": "conflicted"}
    async with _wrapped(clean, inner) as c:
        assert (await c.post("/things", json={}, headers=headers)).status_code == 409
        assert (await c.post("/things", json={}, headers=headers)).status_code == 409
    assert inner.calls == 1


async def test_keys_expire_after_the_ttl(clean: FastAPI, settings: Settings) -> None:
    inner = _Controlled()
    headers = {"Idempotency-Key": "expiring"}
    async with _wrapped(clean, inner) as c:
        assert (await c.post("/things", json={}, headers=headers)).json() == {"call": 1}
        ttl_ms = settings.idempotency_ttl_seconds * 1000
        async with clean.state.engine.begin() as connection:
            expires_ms = (
                await connection.execute(text("SELECT expires_ms FROM idempotency_keys"))
            ).scalar_one()
            assert ttl_ms - 5000 < expires_ms - time.time() * 1000 <= ttl_ms
            # In the past: what 24 h later looks like (the row is still there, unpurged).
            await connection.execute(text("UPDATE idempotency_keys SET expires_ms = 0"))
        assert (await c.post("/things", json={}, headers=headers)).json() == {"call": 2}
        assert (await c.post("/things", json={}, headers=headers)).json() == {"call": 2}
    assert inner.calls == 2


# --- the answer and the work: one transaction -------------------------------------------------


class _Writer(_Controlled):
    """Like :class:`_Controlled`, but it stores a department in the request's session first
    (what a route does through ``SessionDep``), and may pause before doing so."""

    def __init__(self, department_id: int) -> None:
        super().__init__()
        self.department_id = department_id
        self.before_write = asyncio.Event()
        self.before_write.set()
        self.started = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session: AsyncSession = scope[OWNED_SESSION]
        self.started.set()  # the key is ours (its lock taken, where the engine has one)
        await self.before_write.wait()
        await session.execute(
            text("INSERT INTO departments (id, department) VALUES (:id, 'Written')"),
            {"id": self.department_id + self.calls},
        )
        await super().__call__(scope, receive, send)


async def _departments(clean: FastAPI) -> list[int]:
    async with clean.state.engine.connect() as connection:
        result = await connection.execute(text("SELECT id FROM departments ORDER BY id"))
        return [row[0] for row in result]


async def test_the_work_commits_with_its_answer_and_is_undone_without_it(
    clean: FastAPI,
) -> None:
    inner = _Writer(100)
    inner.statuses = [503, 599, 201]
    headers = {"Idempotency-Key": "atomic"}
    async with _wrapped(clean, inner) as c:
        assert (await c.post("/things", json={}, headers=headers)).status_code == 503
        assert (await c.post("/things", json={}, headers=headers)).status_code == 500
        assert await _departments(clean) == []  # the failed attempts' work was rolled back
        assert (await c.post("/things", json={}, headers=headers)).status_code == 201
        replay = await c.post("/things", json={}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert await _departments(clean) == [102]  # the third call's row, once
    async with clean.state.engine.connect() as connection:
        stored = (await connection.execute(text("SELECT status FROM idempotency_keys"))).all()
    assert [row[0] for row in stored] == [201]


async def test_a_second_process_with_the_same_key_never_stores_twice(
    clean: FastAPI, backend: str
) -> None:
    # Two middleware instances: two processes (each with its own in-process set of keys).
    first, second = _Writer(200), _Writer(300)
    first.before_write.clear()
    headers = {"Idempotency-Key": "two-processes"}
    async with _wrapped(clean, first) as one, _wrapped(clean, second) as two:
        pending = asyncio.create_task(one.post("/things", json={}, headers=headers))
        await first.started.wait()
        other = await two.post("/things", json={}, headers=headers)
        first.before_write.set()
        answer = await pending
    if backend == "postgresql":
        # The first holds the key's advisory lock: the other is told to come back.
        assert other.status_code == 409
        assert answer.status_code == 201
        assert await _departments(clean) == [200]
    else:
        # No such lock on SQLite: the other ran and stored first; the first's work was undone
        # and it answers with the stored answer.
        assert other.status_code == 201
        assert answer.status_code == 201
        assert answer.headers["idempotent-replayed"] == "true"
        assert answer.json() == other.json()
        assert await _departments(clean) == [300]


# --- a body that never arrived whole ----------------------------------------------------------


async def test_a_body_cut_short_neither_runs_nor_claims_the_key(clean: FastAPI) -> None:
    inner = _Controlled()
    middleware = IdempotencyMiddleware(
        inner, state=clean.state, settings=clean.state.settings, paths=[r"/things"]
    )
    sent: list[Message] = []
    messages: list[Message] = [
        {"type": "http.request", "body": b'[{"id": 1, "depar', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/things",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"cut-short"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "state": {},
    }
    await middleware(scope, receive, send)
    assert inner.calls == 0
    assert sent == []  # the client is gone: nothing to answer
    async with _wrapped(clean, inner) as c:
        retry = await c.post("/things", json=[{"id": 1}], headers={"Idempotency-Key": "cut-short"})
    assert retry.status_code == 201
    assert inner.calls == 1
