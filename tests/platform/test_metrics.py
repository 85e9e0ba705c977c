"""``/metrics``: request metrics by route template, exceptions, the DB probe, the scope hook and
the Prometheus format (checked by ``promtool``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.app import create_app
from atrium.platform.db_metrics import probe_once, probe_statement, sample_pool
from atrium.platform.errors import Forbidden
from atrium.settings import Settings
from tests.platform.promtool import promtool_check


def sample(name: str, **labels: str) -> float:
    """The current value of one sample of this process's registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
async def metrics_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app of its own with a route that fails, sharing the session's database."""
    app = create_app(settings)

    @app.get("/test-only/boom/{item}", include_in_schema=False)
    async def boom(item: int) -> None:
        raise LookupError(f"item {item} exploded")

    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def metrics_client(metrics_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=metrics_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_requests_are_counted_by_route_template(
    metrics_client: httpx.AsyncClient,
) -> None:
    labels = {"method": "GET", "route": "/test-only/boom/{item}"}
    before = sample("atrium_http_requests_total", **labels, status="500")
    before_latency = sample("atrium_http_request_duration_seconds_count", **labels)
    before_exc = sample(
        "atrium_http_exceptions_total", route=labels["route"], exception="LookupError"
    )
    for item in (1, 2, 3):
        response = await metrics_client.get(f"/test-only/boom/{item}")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
    assert sample("atrium_http_requests_total", **labels, status="500") == before + 3
    assert sample("atrium_http_request_duration_seconds_count", **labels) == before_latency + 3
    assert (
        sample("atrium_http_exceptions_total", route=labels["route"], exception="LookupError")
        == before_exc + 3
    )
    body = (await metrics_client.get("/metrics")).text
    # Raw paths never become labels.
    assert "/test-only/boom/1" not in body
    assert 'route="/test-only/boom/{item}"' in body


async def test_unmatched_paths_share_one_label(metrics_client: httpx.AsyncClient) -> None:
    before = sample("atrium_http_requests_total", method="GET", route="<unmatched>", status="404")
    for path in ("/nope/1", "/nope/2", "/../etc/passwd"):
        assert (await metrics_client.get(path)).status_code == 404
    after = sample("atrium_http_requests_total", method="GET", route="<unmatched>", status="404")
    assert after == before + 3
    body = (await metrics_client.get("/metrics")).text
    assert "/nope/1" not in body


async def test_unusual_methods_are_bounded(metrics_client: httpx.AsyncClient) -> None:
    before = sample("atrium_http_requests_total", method="OTHER", route="/livez", status="405")
    response = await metrics_client.request("PURGE", "/livez")
    assert response.status_code == 405
    after = sample("atrium_http_requests_total", method="OTHER", route="/livez", status="405")
    assert after == before + 1


async def test_in_flight_gauge_counts_running_requests(metrics_app: FastAPI) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @metrics_app.get("/test-only/slow", include_in_schema=False)
    async def slow() -> dict[str, str]:
        started.set()
        await release.wait()
        return {}

    # Routes added after the first request still take effect: the router reads the list live.
    transport = httpx.ASGITransport(app=metrics_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        idle = sample("atrium_http_requests_in_flight")
        pending = asyncio.create_task(client.get("/test-only/slow"))
        await asyncio.wait_for(started.wait(), 10)
        assert sample("atrium_http_requests_in_flight") == idle + 1
        release.set()
        assert (await pending).status_code == 200
        assert sample("atrium_http_requests_in_flight") == idle


async def test_metrics_endpoint_serves_prometheus_text(
    metrics_client: httpx.AsyncClient,
) -> None:
    await metrics_client.get("/livez")
    await metrics_client.get("/test-only/boom/1")
    response = await metrics_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "atrium_http_requests_total",
        "atrium_http_request_duration_seconds_bucket",
        "atrium_http_requests_in_flight",
        "atrium_http_exceptions_total",
        "atrium_db_pool_connections",
        "atrium_db_probe_latency_seconds",
        "atrium_build_info",
    ):
        assert f"\n{name}" in text, name
    promtool_check(text)


async def test_metrics_is_documented_as_plain_text(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/metrics"]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/plain"]


async def test_metrics_can_be_turned_off(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_enabled": False}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
        assert response.status_code == 404
        assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_metrics_scope_fails_closed_and_uses_the_installed_check(
    settings: Settings,
) -> None:
    app = create_app(settings.model_copy(update={"metrics_scope": "metrics:read"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        # No API-key check installed: a required scope cannot be verified, so nobody gets in.
        refused = await client.get("/metrics")
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"

        asked: list[str] = []

        async def require_scope(request: Request, scope: str) -> None:
            asked.append(scope)
            if request.headers.get("x-api-key") != "good":
                raise Forbidden(f"needs scope {scope}")

        app.state.require_scope = require_scope
        assert (await client.get("/metrics")).status_code == 403
        allowed = await client.get("/metrics", headers={"X-API-Key": "good"})
        assert allowed.status_code == 200
        assert asked == ["metrics:read", "metrics:read"]


# --- database probe and pool --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metrics_db_probe_table", "alembic_version; DROP TABLE x"),
        ("metrics_db_probe_table", 'a"b'),
        ("metrics_db_probe_table", "a.b.c"),
        ("metrics_db_probe_column", "version_num FROM x --"),
        ("metrics_db_probe_column", "public.version_num"),
        ("metrics_db_probe_column", ""),
    ],
)
def test_probe_names_must_be_plain_identifiers(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match="plain SQL identifier"):
        Settings(_env_file=None, **{field: value})  # type: ignore[call-arg]


def test_probe_accepts_schema_qualified_table() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        metrics_db_probe_table="public.alembic_version",
        metrics_db_probe_column="version_num",
    )
    assert settings.metrics_db_probe_table == "public.alembic_version"


async def test_probe_measures_latency_and_counts_failures(engine: AsyncEngine) -> None:
    good = probe_statement(engine, "alembic_version", "version_num")
    assert str(good) == "SELECT version_num FROM alembic_version LIMIT 1"
    failures = sample("atrium_db_probe_failures_total")
    assert await probe_once(engine, good, within=5.0)
    assert sample("atrium_db_probe_latency_seconds") > 0
    assert sample("atrium_db_probe_failures_total") == failures
    missing = probe_statement(engine, "no_such_table", "version_num")
    assert not await probe_once(engine, missing, within=5.0)
    assert sample("atrium_db_probe_failures_total") == failures + 1


async def test_probe_runs_from_the_lifespan(settings: Settings) -> None:
    failures = sample("atrium_db_probe_failures_total")
    app = create_app(settings.model_copy(update={"metrics_db_probe_table": "no_such_table"}))
    async with app.router.lifespan_context(app):
        # The first probe runs as soon as the application starts.
        async with asyncio.timeout(10):
            # A gauge has no event to wait on; polling is bounded by the timeout.
            while sample("atrium_db_probe_failures_total") == failures:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    assert sample("atrium_db_probe_failures_total") == failures + 1


async def test_pool_gauges_follow_checked_out_connections(engine: AsyncEngine) -> None:
    sample_pool(engine)
    in_use = sample("atrium_db_pool_connections", state="in_use")
    async with engine.connect():
        sample_pool(engine)
        assert sample("atrium_db_pool_connections", state="in_use") == in_use + 1
    sample_pool(engine)
    assert sample("atrium_db_pool_connections", state="in_use") == in_use
    assert sample("atrium_db_pool_connections", state="max") >= 1


def test_promtool_rejects_bad_exposition(tmp_path: Path) -> None:
    # Proves the check above can fail: a counter without _total and a bad HELP line.
    with pytest.raises(AssertionError):
        promtool_check("# TYPE bad_counter counter\nbad_counter 1\n# HELP\n")
