"""Fixtures for the deployment tests: a real multi-replica cluster behind the real nginx."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from scripts.cluster import Cluster, find_nginx

from atrium.settings import Settings
from tests.support import settings_env

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
