"""Fixtures for the deployment tests: a real multi-replica cluster behind the real nginx."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from scripts.cluster import Cluster, find_nginx

from atrium.settings import Settings
from tests.support import free_port, settings_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(clean: FastAPI, settings: Settings, tmp_path: Path) -> Iterator[Cluster]:
    """Three replicas (one worker each) behind nginx, sharing the session's PostgreSQL+Redis
    (tables and this run's Redis keys emptied first).

    A missing nginx fails the test (CI installs it); it is never a silent skip.
    """
    find_nginx()
    env = settings_env(
        settings,
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
        ATRIUM_GRACEFUL_TIMEOUT="20",
        # As in production: every replica is given the same secrets (none generates its own).
        ATRIUM_ENCRYPTION_KEY="cluster:" + base64.b64encode(os.urandom(32)).decode(),
        ATRIUM_TOKEN_SECRET=secrets.token_urlsafe(32),
    )
    env.pop("ATRIUM_AUTO_MIGRATE", None)
    cluster = Cluster(root=tmp_path / "cluster", env=env)
    cluster.up(replicas=3)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API on loopback: moto in server mode, in its own process."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
