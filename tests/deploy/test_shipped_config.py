"""The shipped deploy files, run as they are: the Kubernetes base (ConfigMap, Secret, the
migration Job, the Deployment's container) and the Compose file, with the image's environment
underneath, on the test run's server database (PostgreSQL, or MariaDB/MySQL) and Redis.

Nothing of the test harness reaches these processes: no ``ATRIUM_ENV=test`` (secrets come from
the environment as the manifests give them), no auto-migration (the Job's ``atrium migrate``
runs first), no Redis key prefix, no key planted in a store (``atrium apikeys create`` makes
one, as an operator would), two workers as shipped, the image's working directory.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from atrium.certificates.crypto import new_key_entry
from atrium.settings import to_async_url
from tests.conftest import REDIS_URL, SERVER_URL
from tests.deploy import shipped
from tests.support import free_port, secret

KEYED = {"method": "GET", "route": "/templates", "status": "200"}
SCOPES = "templates:read,templates:write"


@pytest.fixture
def database() -> Iterator[str]:
    """An empty database of this test's own on the run's server engine (the Job migrates it)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    assert SERVER_URL, "the server runs set ATRIUM_TEST_POSTGRES_URL or ATRIUM_TEST_MYSQL_URL"
    name = f"atrium_smoke_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(
        to_async_url(SERVER_URL), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    quoted = admin.dialect.identifier_preparer.quote(name)
    # PostgreSQL refuses to drop a database someone is still connected to, unless forced;
    # MariaDB's server default character set may not be utf8mb4.
    force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
    charset = " CHARACTER SET utf8mb4" if admin.dialect.name == "mysql" else ""

    async def execute(statement: str) -> None:
        async with admin.connect() as connection:
            await connection.execute(text(statement))

    asyncio.run(execute(f"CREATE DATABASE {quoted}{charset}"))
    base, _, rest = SERVER_URL.rpartition("/")
    query = rest.partition("?")[2]
    try:
        yield f"{base}/{name}" + (f"?{query}" if query else "")
    finally:
        asyncio.run(execute(f"DROP DATABASE IF EXISTS {quoted}{force}"))
        asyncio.run(admin.dispose())


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database (1 to 15) claimed for this test: production uses no key prefix, so the
    server gets a logical database of its own on the test Redis instead; emptied after."""
    from redis import Redis

    assert REDIS_URL, "the PostgreSQL run also sets ATRIUM_TEST_REDIS_URL (CI sets both)"
    base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    token = uuid.uuid4().hex
    for index in range(1, 16):
        client = Redis.from_url(f"{base}/{index}")
        # Only an empty database, and only if nobody claimed it between the two calls.
        if client.dbsize() == 0 and client.set("atrium-smoke-claim", token, nx=True, ex=1800):
            break
        client.close()
    else:
        pytest.fail("no empty Redis database (1-15) to claim on the test Redis")
    try:
        yield f"{base}/{index}"
    finally:
        if client.get("atrium-smoke-claim") == token.encode():
            client.flushdb()
        client.close()


def manifest_secrets(database: str, redis_url: str) -> dict[str, str]:
    """The Secret's variables, made as base/secret.yaml tells an operator to (the encryption
    key is what ``atrium certificates generate-key --kid k1`` prints)."""
    values = {
        "ATRIUM_DATABASE_URL": database,
        "ATRIUM_REDIS_URL": redis_url,
        "ATRIUM_ENCRYPTION_KEY": secret(new_key_entry("k1")),
        "ATRIUM_TOKEN_SECRET": secret(secrets.token_urlsafe(32)),
    }
    assert set(values) == shipped.secret_names(), "the Secret's variables changed"
    return values


def check_served(
    launch: shipped.Launch, log: Path, key: str, replica: str, workers: int
) -> list[dict[str, Any]]:
    """Serve ``launch``: ready, a keyed request on every worker, metrics of all, JSON logs."""
    headers = {"X-API-KEY": key}
    with shipped.serving(launch, log) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        created = httpx.post(
            f"{server.url}/templates",
            json={"name": "smoke", "content": "Hello {{ name }}"},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert created.headers["X-Atrium-Replica"] == replica

        sent, per_worker = shipped.load_every_worker(
            server.url, server.proc.pid, "/templates", KEYED, headers
        )
        assert len(per_worker) == workers
        listed = httpx.get(f"{server.url}/templates", headers=headers, timeout=10).json()
        assert [row["name"] for row in listed["items"]] == ["smoke"]
        sent += 1
        # Whichever worker answers the scrape reports what every worker served.
        for _ in range(4):
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert shipped.exposed(text, shipped.HTTP_REQUESTS, KEYED) == sent, text[:3000]
    lines = [line for line in server.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, the master's too, is JSON
    assert all({"ts", "level", "logger", "msg"} <= record.keys() for record in records)
    return records


@pytest.mark.postgres
@pytest.mark.slow
def test_kubernetes_base_as_shipped(database: str, redis_url: str, tmp_path: Path) -> None:
    image = shipped.read_image()
    configmap = shipped.configmap_env()
    assert configmap["ATRIUM_ENV"] == "production"
    assert configmap["ATRIUM_AUTO_MIGRATE"] == "false"
    tmp = tmp_path / "pod-tmp"
    pod_env = {**configmap, **manifest_secrets(database, redis_url)}

    def pod(kind_file: str, pod_name: str, args: list[str] | None = None) -> shipped.Launch:
        container = shipped.k8s_container(kind_file)
        refs = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert refs == ["atrium-config", "atrium-secrets"]
        env = {**pod_env, **shipped.k8s_pod_env(container, pod_name)}
        args = container["args"] if args is None else args
        return shipped.on_this_machine(image, args, env, tmp=tmp, port=free_port())

    # The migration Job first, then an operator's key (kubectl exec … atrium apikeys create).
    shipped.run_once(pod("migrate-job.yaml", "atrium-migrate-x1"), tmp_path / "migrate.log")
    create_key = ["apikeys", "create", "--owner", "smoke", "--scopes", SCOPES]
    operator = pod("deployment.yaml", "atrium-7d9c5b-ops", create_key)
    key = secret(shipped.run_once(operator, tmp_path / "apikeys.log").strip())

    replica = "atrium-7d9c5b-smoke"
    launch = pod("deployment.yaml", replica)
    assert launch.argv == ["atrium", "serve"]
    assert "PROMETHEUS_MULTIPROC_DIR" not in launch.env
    records = check_served(launch, tmp_path / "server.log", key, replica, workers=2)
    access = [r for r in records if r.get("route") == "/templates" and r.get("status") == 200]
    assert access, "no access-log line for the keyed requests"


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.only_on("postgresql", reason="compose.yaml ships a PostgreSQL service")
def test_compose_as_shipped(database: str, redis_url: str, tmp_path: Path) -> None:
    image = shipped.read_image()
    tmp = tmp_path / "container-tmp"
    operator_exports = {
        "POSTGRES_PASSWORD": "unused-here",
        **{
            name: value
            for name, value in manifest_secrets(database, redis_url).items()
            if name in {"ATRIUM_ENCRYPTION_KEY", "ATRIUM_TOKEN_SECRET"}
        },
    }
    env = shipped.compose_env("api", operator_exports)
    assert env == shipped.compose_env("migrate", operator_exports)
    # The compose network's `postgres` and `redis` services are this run's servers.
    assert env["ATRIUM_DATABASE_URL"].endswith("@postgres:5432/atrium")
    assert env["ATRIUM_REDIS_URL"] == "redis://redis:6379/0"
    env |= {"ATRIUM_DATABASE_URL": database, "ATRIUM_REDIS_URL": redis_url}

    migrate = shipped.on_this_machine(
        image, shipped.compose_command("migrate"), env, tmp=tmp, port=free_port()
    )
    shipped.run_once(migrate, tmp_path / "migrate.log")
    operator = shipped.on_this_machine(
        image,
        ["apikeys", "create", "--owner", "smoke", "--scopes", SCOPES],
        env,
        tmp=tmp,
        port=free_port(),
    )
    key = secret(shipped.run_once(operator, tmp_path / "apikeys.log").strip())

    launch = shipped.on_this_machine(
        image, shipped.compose_command("api"), env, tmp=tmp, port=free_port()
    )
    assert launch.argv == ["atrium", "serve", "--workers", "2"]
    # Compose sets no replica name: the container's hostname is one.
    check_served(launch, tmp_path / "server.log", key, socket.gethostname(), workers=2)


def test_helm_chart_configures_what_the_kubernetes_base_does() -> None:
    values = yaml.safe_load((shipped.DEPLOY / "helm" / "atrium" / "values.yaml").read_text())
    rendered = {**values["config"], "ATRIUM_WORKERS": str(values["workers"])}
    assert rendered == shipped.configmap_env()
