"""API keys: required where they should be, scopes, hashed storage, the CLI, the first key."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.app import create_app
from atrium.hr.routes import router as hr_router
from atrium.market.routes import router as market_router
from atrium.platform.apikeys import ApiKey, KeyStore, hash_key, validate_scopes
from atrium.settings import Settings
from tests.support import run_server, secret, settings_env

PROBLEM = "application/problem+json"


def _failures(reason: str) -> float:
    value = REGISTRY.get_sample_value("atrium_api_key_failures_total", {"reason": reason})
    return value or 0.0


async def _key(app: FastAPI, *scopes: str, rate_limit: int | None = None) -> tuple[str, ApiKey]:
    store: KeyStore = app.state.api_keys
    key, record = await store.create("someone", scopes, rate_limit)
    return secret(key), record


@asynccontextmanager
async def _client(app: FastAPI, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-API-KEY": key} if key else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        yield c


async def test_no_key_or_unknown_key_is_401(anon_client: httpx.AsyncClient) -> None:
    missing = _failures("missing")
    response = await anon_client.get("/templates")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/unauthorized")
    assert "X-API-KEY" in response.headers["www-authenticate"]
    assert _failures("missing") == missing + 1
    unknown = _failures("unknown")
    for key in ("atr_nope", "x" * 300, "  "):
        bad = await anon_client.get("/templates", headers={"X-API-KEY": key})
        assert bad.status_code == 401, key
        assert bad.headers["content-type"] == PROBLEM
    assert _failures("unknown") == unknown + 2  # the blank one counts as no key
    # An unknown key is refused before anything else happens, even for writes.
    assert (
        await anon_client.post("/templates", json={}, headers={"X-API-KEY": "atr_nope"})
    ).status_code == 401


async def test_scopes_decide_what_a_key_may_do(clean: FastAPI) -> None:
    reader, _ = await _key(clean, "templates:read")
    writer, _ = await _key(clean, "templates:write")
    admin, _ = await _key(clean, "admin")
    other, _ = await _key(clean, "hr:read", "market:read")
    async with _client(clean, admin) as c:
        created = (await c.post("/templates", json={"name": "x"})).json()
    url = f"/templates/{created['templateid']}"
    async with _client(clean, reader) as c:
        assert (await c.get(url)).status_code == 200
        assert (await c.get("/templates")).status_code == 200
        forbidden = await c.post("/templates", json={})
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"] == PROBLEM
        assert forbidden.json()["type"].endswith("/forbidden")
        assert forbidden.json()["required_scope"] == "templates:write"
        for method in ("PUT", "PATCH", "DELETE"):
            assert (await c.request(method, url, json={})).status_code == 403, method
    async with _client(clean, writer) as c:
        assert (await c.get(url)).status_code == 403  # write does not imply read
        assert (await c.patch(url, json={"content": "w"})).status_code == 200
    async with _client(clean, other) as c:
        assert (await c.get(url)).status_code == 403
    async with _client(clean, admin) as c:
        assert (await c.delete(url)).status_code == 204


async def test_revoked_key_stops_working_at_once(clean: FastAPI) -> None:
    key, record = await _key(clean, "templates:read")
    store: KeyStore = clean.state.api_keys
    async with _client(clean, key) as c:
        assert (await c.get("/templates")).status_code == 200
        revoked = await store.revoke(record.id)
        assert revoked is not None
        assert revoked.revoked
        before = _failures("revoked")
        response = await c.get("/templates")
        assert response.status_code == 401
        assert _failures("revoked") == before + 1
    assert await store.revoke("no-such-id") is None
    listed = {r.id: r for r in await store.list()}
    assert listed[record.id].revoked


async def test_open_paths_need_no_key(anon_client: httpx.AsyncClient) -> None:
    for path in ("/livez", "/readyz", "/openapi.json", "/docs", "/redoc"):
        assert (await anon_client.get(path)).status_code == 200, path
        # A bad key on an open path is ignored, not an error.
        assert (await anon_client.get(path, headers={"X-API-KEY": "bad"})).status_code == 200
    assert (await anon_client.get("/static/docs/swagger-ui.css")).status_code == 200
    # Registration and login are open; the certificate routes ask for a bearer token, not a key.
    for method, path in (("POST", "/users"), ("POST", "/auth/token")):
        response = await anon_client.request(method, path, json={})
        assert response.status_code != 401, (method, path)
    for path in ("/users/1", "/users/1/certificates"):
        response = await anon_client.get(path, headers={"X-API-KEY": "atr_unknown"})
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer"), path


async def test_anonymous_scopes_open_chosen_scopes(settings: Settings, clean: FastAPI) -> None:
    app = create_app(settings.model_copy(update={"anonymous_scopes": ["templates:read"]}))
    async with app.router.lifespan_context(app), _client(app) as c:
        assert (await c.get("/templates")).status_code == 200
        assert (await c.post("/templates", json={})).status_code == 401


@pytest.fixture
def probe_routes() -> Iterator[None]:
    """Temporary routes on the HR and market routers: proves app.py guards those routers."""

    async def probe() -> dict[str, bool]:
        return {"ok": True}

    added = [
        (hr_router, "/hr/_probe", ["GET"]),
        (hr_router, "/hr/_probe", ["POST"]),
        (market_router, "/api/_probe", ["GET"]),
    ]
    before = {id(r): list(r.routes) for r, _, _ in added}
    for router, path, methods in added:
        router.add_api_route(path.removeprefix(router.prefix), probe, methods=methods)
        # First in line, so the domain's own ``/hr/{table}`` does not match the probe's path.
        router.routes.insert(0, router.routes.pop())
    try:
        yield
    finally:
        for router, _, _ in added:
            router.routes[:] = before[id(router)]


async def test_hr_and_market_routers_are_guarded(
    settings: Settings, clean: FastAPI, probe_routes: None
) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hr_read, _ = await _key(app, "hr:read")
        hr_write, _ = await _key(app, "hr:write")
        market, _ = await _key(app, "market:read")
        async with _client(app) as c:
            assert (await c.get("/hr/_probe")).status_code == 401
            assert (await c.get("/api/_probe")).status_code == 401
        async with _client(app, hr_read) as c:
            assert (await c.get("/hr/_probe")).status_code == 200
            assert (await c.post("/hr/_probe")).status_code == 403
            assert (await c.get("/api/_probe")).status_code == 403
        async with _client(app, hr_write) as c:
            assert (await c.post("/hr/_probe")).status_code == 200
            assert (await c.get("/hr/_probe")).status_code == 403
        async with _client(app, market) as c:
            assert (await c.get("/api/_probe")).status_code == 200
            assert (await c.get("/hr/_probe")).status_code == 403


async def test_openapi_declares_the_api_key_scheme(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    assert "security" not in schema["paths"]["/livez"]["get"]


async def test_only_the_hash_is_stored(clean: FastAPI, backend: str) -> None:
    key, record = await _key(clean, "templates:read", rate_limit=7)
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert hash_key(key) == digest
    redis: Any = clean.state.redis
    if redis is not None:
        name = f"{clean.state.settings.redis_prefix}sec_apikeys"
        raw = await redis.hget(name, digest)
        stored = orjson.loads(raw)
        assert stored["owner"] == "someone"
        assert stored["scopes"] == ["templates:read"]
        assert stored["rate_limit"] == 7
        assert stored["id"] == record.id
        everything = await redis.hgetall(name)
        dump = b"".join(k + v for k, v in everything.items())
    else:
        async with clean.state.engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM api_keys"))).all()
        assert any(row.key_hash == digest for row in rows)
        dump = repr(rows).encode()
    assert key.encode() not in dump
    assert key[4:].encode() not in dump


async def test_key_check_costs_no_database_round_trip(clean: FastAPI, engine: AsyncEngine) -> None:
    key, _ = await _key(clean, "templates:read")
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        # The SQL store's change check (a count, once a second, in the background) is not a
        # round trip of the request's.
        if "count(api_keys.revoked)" not in statement:
            statements.append(statement)

    async with _client(clean, key) as c:
        assert (await c.get("/templates")).status_code == 200  # warm: keys and cache loaded
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            for _ in range(5):
                assert (await c.get("/templates")).status_code == 200
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert statements == []


def test_scope_validation() -> None:
    assert validate_scopes(["templates:read", " admin ", "admin"]) == ("templates:read", "admin")
    with pytest.raises(ValueError, match="unknown scope"):
        validate_scopes(["templates:raed"])
    with pytest.raises(ValueError, match="at least one"):
        validate_scopes([" "])
    assert validate_scopes(["metrics:read"], extra=["metrics:read"]) == ("metrics:read",)


def test_stored_records_from_older_deployments_are_read() -> None:
    legacy = ApiKey.from_json(b'{"owner": "ops", "scopes": "hr:read, market:read"}', "ab" * 32)
    assert legacy.owner == "ops"
    assert legacy.scopes == ("hr:read", "market:read")
    assert legacy.id == ("ab" * 32)[:16]
    assert legacy.active
    assert ApiKey.from_json(b"just-a-name", "cd" * 32).owner == "just-a-name"
    assert not ApiKey.from_json(b'{"owner": "x", "revoked": "2026-01-01"}', "ef" * 32).active


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atrium.cli", "apikeys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_create_list_revoke(clean: FastAPI, settings: Settings) -> None:
    env = settings_env(settings)
    created = _cli(env, "create", "--owner", "alice", "--scopes", "templates:read,templates:write")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert len(lines) == 1  # only the key on stdout: KEY=$(atrium apikeys create ...)
    key = secret(lines[0])
    assert key.startswith("atr_")
    async with _client(clean, key) as c:
        assert (await c.post("/templates", json={"name": "cli"})).status_code == 201
    listed = _cli(env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    records = [orjson.loads(line) for line in listed.stdout.splitlines()]
    alice = next(r for r in records if r["owner"] == "alice")
    assert alice["scopes"] == ["templates:read", "templates:write"]
    assert key not in listed.stdout
    table = _cli(env, "list")
    assert alice["id"] in table.stdout
    revoked = _cli(env, "revoke", alice["id"])
    assert revoked.returncode == 0, revoked.stderr
    async with _client(clean, key) as c:
        assert (await c.get("/templates")).status_code == 401
    assert _cli(env, "revoke", "no-such-id").returncode != 0
    bad = _cli(env, "create", "--owner", "bob", "--scopes", "templates:raed")
    assert bad.returncode != 0
    assert bad.stdout == ""
    assert "unknown scope" in bad.stderr


def _first_start_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = settings_env(
        settings,
        ATRIUM_DATA_DIR=str(data_dir),
        ATRIUM_DATABASE_URL=f"sqlite:///{data_dir / 'atrium.db'}",
    )
    env.pop("ATRIUM_REDIS_URL", None)
    return env


def _keys_in(output: str) -> list[str]:
    return [
        line.split("X-API-KEY:", 1)[1].strip()
        for line in output.splitlines()
        if line.strip().startswith("X-API-KEY:")
    ]


@pytest.mark.slow
def test_embedded_first_start_prints_one_admin_key(settings: Settings, tmp_path: Path) -> None:
    env = _first_start_env(settings, tmp_path / "fresh")
    with run_server(env, tmp_path / "logs1") as server:
        keys = _keys_in(server.output())
        assert len(keys) == 1
        key = keys[0]
        headers = {"X-API-KEY": key}
        assert httpx.post(f"{server.url}/templates", json={}, headers=headers).status_code == 201
        assert httpx.get(f"{server.url}/templates", headers=headers).status_code == 200
        output = server.output()
    assert output.count(key) == 1  # printed once, never logged
    with run_server(env, tmp_path / "logs2") as server:
        assert _keys_in(server.output()) == []  # not on later starts
        assert httpx.get(f"{server.url}/templates", headers=headers).status_code == 200


async def test_metrics_scope_protects_metrics(settings: Settings, clean: FastAPI) -> None:
    app = create_app(settings.model_copy(update={"metrics_scope": "admin"}))
    async with app.router.lifespan_context(app):
        admin, _ = await _key(app, "admin")
        reader, _ = await _key(app, "templates:read")
        async with _client(app) as c:
            assert (await c.get("/metrics")).status_code == 401
        async with _client(app, reader) as c:
            assert (await c.get("/metrics")).status_code == 403
        async with _client(app, "atr_unknown") as c:
            assert (await c.get("/metrics")).status_code == 401
        async with _client(app, admin) as c:
            response = await c.get("/metrics")
            assert response.status_code == 200
            assert "atrium_api_key_failures" in response.text
