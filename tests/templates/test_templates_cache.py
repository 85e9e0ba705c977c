"""Template reads are cached and never stale after a write, also across server processes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.settings import Settings
from tests.support import ServerProcess, run_server, settings_env


def _hits() -> float:
    value = REGISTRY.get_sample_value(
        "atrium_cache_requests_total", {"cache": "templates", "result": "hit"}
    )
    return value or 0.0


class _StatementCounter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.count = 0

    def _count(self, _conn: object, _cursor: object, statement: str, *_: object) -> None:
        # Only the templates' own statements: the app's background tasks (the database
        # probe, the API-key refresh) share the engine and may run meanwhile.
        if "templates" in statement:
            self.count += 1

    def __enter__(self) -> _StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


async def test_a_cache_hit_touches_no_database(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = (await client.post("/templates", json={"content": "v1"})).json()
    url = f"/templates/{created['templateid']}"
    first = await client.get(url)  # miss: loads and fills
    hits = _hits()
    with _StatementCounter(engine) as statements:
        second = await client.get(url)
        listing_miss = await client.get("/templates")
        listing_hit = await client.get("/templates")
    assert second.json() == first.json()
    assert second.headers["etag"] == first.headers["etag"]
    assert listing_hit.json() == listing_miss.json()
    assert _hits() == hits + 2
    assert statements.count == 2  # only the list miss: its COUNT and its SELECT


async def test_writes_are_visible_to_the_next_read(client: httpx.AsyncClient) -> None:
    created = (await client.post("/templates", json={"name": "n", "content": "0"})).json()
    url = f"/templates/{created['templateid']}"
    for i in range(1, 6):
        assert (await client.get(url)).json()["content"] == str(i - 1)
        assert (await client.get("/templates", params={"name": "n"})).json()["items"][0][
            "content"
        ] == str(i - 1)
        await client.patch(url, json={"content": str(i)})
    assert (await client.get(url)).json()["content"] == "5"
    await client.delete(url)
    assert (await client.get(url)).status_code == 404
    assert (await client.get("/templates", params={"name": "n"})).json()["total"] == 0


@pytest.fixture
def two_servers(
    clean: FastAPI, settings: Settings, admin_api_key: str, tmp_path: Path
) -> Iterator[list[ServerProcess]]:
    env = settings_env(settings)
    with (
        run_server(env, tmp_path / "a") as first,
        run_server(env, tmp_path / "b") as second,
    ):
        yield [first, second]


@pytest.mark.postgres
@pytest.mark.slow
async def test_no_stale_read_across_processes(
    two_servers: list[ServerProcess], admin_api_key: str
) -> None:
    """Writers and readers interleaved over two processes sharing Redis: 0 stale reads."""
    rng = random.Random(5)
    headers = {"X-API-KEY": admin_api_key}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        created = await http.post(f"{two_servers[0].url}/templates", json={"content": "0"})
        assert created.status_code == 201
        path = f"/templates/{created.json()['templateid']}"
        committed = 0  # highest version whose write has returned
        stale: list[tuple[int, int]] = []
        reads = 0
        done = False

        async def writer() -> None:
            nonlocal committed, done
            for version in range(1, 61):
                server = rng.choice(two_servers)
                response = await http.patch(f"{server.url}{path}", json={"content": str(version)})
                assert response.status_code == 200
                committed = version
            done = True

        async def reader() -> None:
            nonlocal reads
            while not done:
                floor = committed
                server = rng.choice(two_servers)
                response = await http.get(f"{server.url}{path}")
                assert response.status_code == 200
                seen = int(response.json()["content"])
                reads += 1
                if seen < floor:
                    stale.append((seen, floor))

        await asyncio.gather(writer(), *(reader() for _ in range(4)))
        assert reads > 60
        assert stale == []
        for server in two_servers:
            final = await http.get(f"{server.url}{path}")
            assert final.json()["content"] == "60"


async def test_hits_are_answered_by_the_front_door(
    client: httpx.AsyncClient, clean: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached GET by id never enters the framework, yet answers exactly like the route."""
    from atrium.platform import guard

    served: list[int] = []
    original = guard._serve_cached

    async def spy(*args: object, **kwargs: object) -> None:
        served.append(1)
        await original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(guard, "_serve_cached", spy)
    created = (await client.post("/templates", json={"content": "fast"})).json()
    url = f"/templates/{created['templateid']}"
    miss = await client.get(url)
    assert served == []
    hit = await client.get(url)
    assert served == [1]
    assert hit.status_code == 200
    assert hit.content == miss.content
    for header in ("etag", "content-type", "ratelimit-limit"):
        assert hit.headers[header] == miss.headers[header], header
    assert "ratelimit-remaining" in hit.headers
    not_modified = await client.get(url, headers={"If-None-Match": hit.headers["etag"]})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert served == [1, 1]
    # Scopes still rule: a key that may not read falls through to the route's 403.
    writer, _ = await clean.state.api_keys.create("w", ("templates:write",))
    refused = await client.get(url, headers={"X-API-KEY": writer})
    assert refused.status_code == 403
    assert served == [1, 1]
    # An id the route would reject is left to the route.
    assert (await client.get("/templates/not-a-uuid")).status_code == 422
    # Upper-case ids are the same template.
    upper = await client.get(url.upper().replace("/TEMPLATES/", "/templates/"))
    assert upper.status_code == 200
    assert upper.content == miss.content
