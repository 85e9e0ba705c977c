"""Helpers shared by tests: a real server process on loopback, free ports, env for it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from atrium.settings import Settings

# Secret values tests send or configure: no log line of the run may contain one (conftest
# checks every in-process line and every server log at the end of the session).
TEST_SECRETS: set[str] = set()
# Output files of every server process started by ``run_server``.
SERVER_LOGS: list[Path] = []


# Prefixes of the environment variables the app (or a library it configures) reads.
APP_VARIABLES = ("ATRIUM_", "PROMETHEUS_", "OTEL_", "AWS_")


def secret(value: str) -> str:
    """Use ``value`` as a secret: the run fails if it ever shows up in a log."""
    TEST_SECRETS.add(value)
    return value


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The ``ATRIUM_*`` environment that makes a child process use ``settings``' storage.

    Nothing the app reads is inherited from the shell running the tests (``ATRIUM_*``,
    ``PROMETHEUS_MULTIPROC_DIR``, ``OTEL_*``, ``AWS_*``): a test passes on what it sets.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(APP_VARIABLES)}
    env.update(
        {
            "ATRIUM_ENV": settings.env,
            "ATRIUM_DATA_DIR": str(settings.data_dir),
            "ATRIUM_LOG_LEVEL": settings.log_level,
            "ATRIUM_AUTO_MIGRATE": "true",
        }
    )
    if settings.database_url:
        env["ATRIUM_DATABASE_URL"] = settings.database_url
    if settings.redis_url:
        env["ATRIUM_REDIS_URL"] = settings.redis_url
        env["ATRIUM_REDIS_PREFIX"] = settings.redis_prefix
    for name in ("encryption_key", "token_secret"):
        value = getattr(settings, name)
        if value is not None:
            env[f"ATRIUM_{name.upper()}"] = value.get_secret_value()
    env.update(overrides)
    return env


class ServerProcess:
    """A running ``atrium serve`` child; ``url`` is its base URL, ``log`` its output file."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def output(self) -> str:
        """Everything the server wrote so far."""
        return self.log.read_text(errors="replace")


@contextmanager
def run_server(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    port: int | None = None,
    workers: int = 1,
    timeout: float = 90.0,
) -> Iterator[ServerProcess]:
    """Start ``atrium serve`` on loopback, wait for ``/livez``, stop it with SIGTERM after.

    The wait is generous on purpose: it is no performance assertion, and a start (two
    interpreters importing the app, migrations, the pool opened) takes 20-40 s on a 2-core
    machine under load; a server that exits early still fails at once.
    """
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"server-{port}.log"
    SERVER_LOGS.append(log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "atrium.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=dict(env),
            # Not the checkout: a developer's .env there must not reach the server.
            cwd=log_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(proc, url, log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.output()}")
            try:
                if httpx.get(url + "/livez", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
