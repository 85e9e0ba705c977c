"""``atrium serve`` as a real process: gunicorn options, and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atrium.platform.server import bind_address, gunicorn_options
from atrium.settings import Settings
from tests.support import free_port, settings_env

REPO = Path(__file__).resolve().parents[2]


def test_gunicorn_options_follow_settings() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        graceful_timeout=12,
        keepalive_timeout=7,
        worker_timeout=40,
        max_requests=1000,
    )
    options = gunicorn_options(settings, host="0.0.0.0", port=9000, workers=3)
    assert options["bind"] == ["0.0.0.0:9000"]
    assert options["workers"] == 3
    assert options["keepalive"] == 7
    assert options["timeout"] == 40
    # The master waits longer than the workers drain, so the app's shutdown can run.
    assert options["graceful_timeout"] == 12 + 5
    assert options["max_requests_jitter"] == 100
    assert options["control_socket_disable"] is True
    assert options["worker_class"] == "atrium.platform.server.AtriumWorker"
    assert bind_address("::", 8000) == "[::]:8000"


async def _wait_for(path: Path, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    async with asyncio.timeout(limit):
        while not path.exists():  # noqa: ASYNC240 - a file is the cross-process signal
            assert proc.poll() is None, "server died"
            await asyncio.sleep(0.02)


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@pytest.fixture
def gated_server(
    settings: Settings, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``atrium serve`` (2 workers) serving the gated app; yields (process, port, gate dir)."""
    port = free_port()
    gates = tmp_path / "gates"
    gates.mkdir()
    env = settings_env(
        settings,
        ATRIUM_GRACEFUL_TIMEOUT="30",
        ATRIUM_TEST_GATE_DIR=str(gates),
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atrium.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--app",
            "tests.deploy.slowapp:create_app",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
    )
    try:
        for _ in range(300):
            if proc.poll() is not None:
                break
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        yield proc, port, gates
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


@pytest.mark.slow
async def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    gated_server: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, gates = gated_server
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        in_flight = [asyncio.create_task(client.get(f"/_test/gate/g{i}")) for i in range(2)]
        for i in range(2):
            await _wait_for(gates / f"g{i}.started", proc)

        proc.send_signal(signal.SIGTERM)  # to the master, as Kubernetes/Docker/Nomad do
        async with asyncio.timeout(20):
            while not _refuses_connections(port):  # noqa: ASYNC110 - polling the kernel
                await asyncio.sleep(0.05)
        # Refusing new connections did not cut the requests already being served.
        assert not any(task.done() for task in in_flight)
        assert proc.poll() is None

        for i in range(2):
            (gates / f"g{i}.release").touch()
        responses = await asyncio.gather(*in_flight)
    assert [r.status_code for r in responses] == [200, 200]
    assert {r.json()["gate"] for r in responses} == {"g0", "g1"}
    assert await asyncio.to_thread(proc.wait, 30) == 0
