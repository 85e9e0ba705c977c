"""One server for the docs tests, started as a new user starts it, with ``atrium demo`` run.

``atrium serve`` on the embedded default with a fresh data folder and nothing else configured
(what ``make serve`` does), then ``atrium demo`` against it: the README's first steps. The
demo tests, the examples of the docs and the chart page all use this server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ServerProcess, free_port, run_server


@dataclass
class DemoServer:
    """The running server, the environment that reaches it, the first demo's output."""

    server: ServerProcess
    env: dict[str, str]
    data_dir: Path
    first_demo: subprocess.CompletedProcess[str]

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.server.url

    def admin_key(self) -> str:
        """The key the first start kept in the data folder."""
        return (self.data_dir / "admin_api_key").read_text().strip()


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


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """``atrium serve`` (fresh, embedded default) with ``atrium demo`` run once."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    port = free_port()
    env = user_env(data_dir, port)
    with run_server(env, tmp_path_factory.mktemp("demo-server"), port=port) as server:
        first = atrium(["demo"], env, tmp_path_factory.mktemp("demo-cwd"))
        assert first.returncode == 0, first.stdout + first.stderr
        yield DemoServer(server, env, data_dir, first)
