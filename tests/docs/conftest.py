"""One server for the docs tests, started as a new user starts it, with ``atrium demo`` run.

On the embedded default (the default run): ``atrium serve`` with a fresh data folder and
nothing else configured (what ``make serve`` does), then ``atrium demo`` against it — the
README's first steps. In the PostgreSQL + Redis run, the same on a database and a Redis prefix
of its own, with the secrets and the admin key a cluster's operator provides (a server
database makes no first-start key), so the docs' examples are proven on both. The demo tests,
the examples of the docs and the chart page all use this server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL, REDIS_URL, RUN_ID
from tests.support import ServerProcess, free_port, run_server, secret


@dataclass
class DemoServer:
    """The running server, the environment that reaches it, the first demo's output."""

    server: ServerProcess
    env: dict[str, str]
    data_dir: Path
    first_demo: subprocess.CompletedProcess[str]
    operator_key: str | None  # server database: the admin key made for it (no first-start key)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.server.url

    @property
    def embedded(self) -> bool:
        """True on the embedded default (SQLite), false on PostgreSQL + Redis."""
        return self.operator_key is None

    def admin_key(self) -> str:
        """The first start's key kept in the data folder, or the operator's."""
        return self.operator_key or (self.data_dir / "admin_api_key").read_text().strip()

    def demo_args(self) -> list[str]:
        """``atrium demo`` as the user runs it here (a server database needs ``--api-key``)."""
        return ["demo"] if self.embedded else ["demo", "--api-key", self.admin_key()]


def atrium(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``atrium`` command line as a user would, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "atrium.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def user_env(data_dir: Path, port: int) -> dict[str, str]:
    """A user's environment: nothing of ours but where the data is and which port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATRIUM_", "OTEL_"))}
    env.update({"ATRIUM_DATA_DIR": str(data_dir), "ATRIUM_PORT": str(port)})
    return env


async def _database(action: str, name: str) -> None:
    import asyncpg

    assert PG_ADMIN_URL is not None
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        if action == "create":
            await admin.execute(f'CREATE DATABASE "{name}"')
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _drop_redis_prefix(prefix: str) -> None:
    from redis import Redis

    assert REDIS_URL is not None
    client = Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """``atrium serve`` (fresh) with ``atrium demo`` run once."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    cwd = tmp_path_factory.mktemp("demo-cwd")
    port = free_port()
    env = user_env(data_dir, port)
    database = f"atrium_docs_{RUN_ID}"
    prefix = f"atrium-docs-{RUN_ID}:"
    operator_key = None
    if PG_ADMIN_URL:
        asyncio.run(_database("create", database))
        kid_key = base64.b64encode(secrets.token_bytes(32)).decode()
        env.update(
            {
                "ATRIUM_DATABASE_URL": f"{PG_ADMIN_URL.rpartition('/')[0]}/{database}",
                "ATRIUM_AUTO_MIGRATE": "true",
                "ATRIUM_ENCRYPTION_KEY": secret(f"k1:{kid_key}"),
                "ATRIUM_TOKEN_SECRET": secret(secrets.token_urlsafe(32)),
            }
        )
        if REDIS_URL:
            env.update({"ATRIUM_REDIS_URL": REDIS_URL, "ATRIUM_REDIS_PREFIX": prefix})
    try:
        with run_server(env, tmp_path_factory.mktemp("demo-server"), port=port) as server:
            if PG_ADMIN_URL:
                made = atrium(
                    ["apikeys", "create", "--owner", "operator", "--scopes", "admin"], env, cwd
                )
                assert made.returncode == 0, made.stderr
                operator_key = secret(made.stdout.strip())
            unused = subprocess.CompletedProcess[str]([], 0)
            demo = DemoServer(server, env, data_dir, unused, operator_key)
            first = atrium(demo.demo_args(), env, cwd)
            assert first.returncode == 0, first.stdout + first.stderr
            demo.first_demo = first
            yield demo
    finally:
        if PG_ADMIN_URL:
            asyncio.run(_database("drop", database))
        if REDIS_URL:
            _drop_redis_prefix(prefix)
