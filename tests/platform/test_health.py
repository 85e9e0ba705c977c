"""Probes fail when they should: ``/readyz`` is 503 with a problem document when the database
is unreachable, behind on migrations, or Redis is down, while ``/livez`` keeps answering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from atrium.app import create_app
from atrium.platform.migrate import head_revisions, upgrade
from atrium.settings import Settings
from tests.support import free_port

PROBLEM = "application/problem+json"


@asynccontextmanager
async def serving(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app (lifespan entered) built from ``settings`` with ``changes``."""
    app = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def assert_unavailable(response: httpx.Response) -> dict[str, Any]:
    """The response is the 503 problem document; its body is returned."""
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == "https://atrium.dev/problems/unavailable"
    assert body["status"] == 503
    return body


async def test_unreachable_database(settings: Settings) -> None:
    # Nothing listens on this port; the engine connects lazily, so the app still starts.
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
    async with serving(settings, database_url=url, auto_migrate=False, redis_url=None) as client:
        body = assert_unavailable(await client.get("/readyz"))
        assert "database" in body["detail"]
        assert body["checks"]["database"] not in ("ok", "")
        assert (await client.get("/livez")).status_code == 200


async def test_database_without_migrations(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    async with serving(settings, database_url=url, auto_migrate=False, redis_url=None) as client:
        body = assert_unavailable(await client.get("/readyz"))
        assert "expected" in body["checks"]["migrations"]
        assert (await client.get("/livez")).status_code == 200
        # The same app becomes ready once migrated: the check is not stuck on failure.
        await upgrade(client.app.state.engine)  # type: ignore[attr-defined]
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "migrations": "ok"}


async def test_database_behind_on_migrations(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    async with serving(settings, database_url=url, auto_migrate=False, redis_url=None) as client:
        await upgrade(client.app.state.engine, "0001")  # type: ignore[attr-defined]
        body = assert_unavailable(await client.get("/readyz"))
        assert "'0001'" in body["checks"]["migrations"]
        assert all(head in body["checks"]["migrations"] for head in head_revisions())


async def test_unreachable_redis(settings: Settings) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    async with serving(settings, redis_url=redis_url) as client:
        body = assert_unavailable(await client.get("/readyz"))
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"] not in ("ok", "")
        assert (await client.get("/livez")).status_code == 200
