"""Metrics with several worker processes: counters add up across workers, a dead worker's
gauges are released, and every start begins from an empty multiprocess folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from atrium.app import create_app
from atrium.platform import supervisor
from atrium.platform.multiprocess import (
    MULTIPROC_ENV,
    check_value_class,
    prepare_multiprocess_dir,
    worker_pids,
)
from atrium.settings import Settings
from tests.deploy import shipped
from tests.deploy.shipped import wait_for
from tests.platform.promtool import promtool_check
from tests.support import run_server, settings_env

# Requests only this test makes (run_server's readiness checks go to /livez).
UNMATCHED = {"method": "GET", "route": "<unmatched>", "status": "404"}


def unmatched_count(text: str) -> float:
    """``atrium_http_requests_total`` of this test's requests in an exposition."""
    return shipped.exposed(text, shipped.HTTP_REQUESTS, UNMATCHED)


def served_by_worker(metrics_dir: Path) -> dict[int, float]:
    """How many of this test's requests each worker served, read from its own sample file."""
    return shipped.counts_by_worker(metrics_dir, shipped.HTTP_REQUESTS, UNMATCHED)


@pytest.mark.slow
def test_counters_add_up_across_workers(settings: Settings, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_4194303.db"
    stale.write_bytes(b"left over by a previous run")
    env = settings_env(settings, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with run_server(env, tmp_path / "logs", workers=2) as server:
        assert not stale.exists(), "samples of a previous run must not be added to this one"
        # (>= : a forking supervisor that imported the app has sample files of its own.)
        wait_for(lambda: len(worker_pids(metrics_dir)) >= 2, "two workers")

        def hit(_: int) -> int:
            # A new connection each time, so the kernel spreads them over both workers.
            return httpx.get(f"{server.url}/no-such-page", timeout=10).status_code

        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(served_by_worker(metrics_dir)) < 2 and sent < 2000:
                assert set(pool.map(hit, range(40))) == {404}
                sent += 40
        # A request is counted just after its response went out: let the last ones land.
        wait_for(lambda: sum(served_by_worker(metrics_dir).values()) == sent, "all counts")
        per_worker = served_by_worker(metrics_dir)
        assert len(per_worker) == 2, f"one worker served all {sent} requests"

        # Whichever worker answers the scrape reports what all of them served.
        for _ in range(4):
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert unmatched_count(text) == sent
        promtool_check(text)

        # A worker killed without a clean exit: its live gauges go, its counts stay.
        victim = min(per_worker)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in worker_pids(metrics_dir), "the dead worker's release")
        assert (metrics_dir / f"counter_{victim}.db").exists()
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert unmatched_count(text) == sent
        assert "atrium_http_requests_in_flight 1.0" in text, "only the scrape itself is in flight"


@pytest.mark.slow
@pytest.mark.only_on("sqlite", reason="the metrics folder's life does not depend on the engine")
def test_a_recycled_worker_leaves_the_private_folder_to_the_others(
    settings: Settings, tmp_path: Path
) -> None:
    # No PROMETHEUS_MULTIPROC_DIR: `atrium serve` makes a private folder. A worker recycled
    # after ATRIUM_MAX_REQUESTS leaves with sys.exit, running the handlers it inherited.
    env = settings_env(settings, ATRIUM_MAX_REQUESTS="20")
    env.pop(MULTIPROC_ENV, None)
    with run_server(env, tmp_path / "logs", workers=2) as server:
        master = server.proc.pid
        wait_for(lambda: shipped.multiprocess_dir(master), "a multiprocess sample folder")
        directory = shipped.multiprocess_dir(master)
        assert directory is not None
        first = shipped.worker_pids(master)

        def hit(_: int) -> int:
            # A connection the kernel handed to a worker that is just leaving can be closed
            # unanswered (the request never reached the app): retry it, as a client would.
            for _attempt in range(3):
                try:
                    return httpx.get(f"{server.url}/no-such-page", timeout=10).status_code
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    continue
            raise AssertionError("three connections in a row closed unanswered")

        sent = 0
        with ThreadPoolExecutor(max_workers=4) as pool:
            # Until a worker was recycled, then more for its successor and the other one.
            while shipped.worker_pids(master) == first and sent < 200:
                assert set(pool.map(hit, range(10))) == {404}
                sent += 10
            assert shipped.worker_pids(master) != first, "no worker was recycled"
            assert set(pool.map(hit, range(30))) == {404}
            sent += 30

        wait_for(lambda: sum(served_by_worker(directory).values()) == sent, "all counts")
        assert directory.is_dir()
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert unmatched_count(text) == sent


def test_a_folder_set_after_prometheus_client_was_imported_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings
) -> None:
    # This process imported prometheus_client without the variable (in-process values): with
    # it set now, samples would never reach the folder and /metrics would be empty.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="after prometheus_client had been imported"):
        check_value_class()
    with pytest.raises(RuntimeError, match="after prometheus_client had been imported"):
        create_app(settings)


def test_serve_runs_the_master_in_a_fresh_interpreter() -> None:
    argv = supervisor.command(host="0.0.0.0", port=8000, workers=2, app="atrium.app:create_app")
    assert argv[:4] == [sys.executable, "-P", "-m", "atrium.platform.supervisor"]
    # Neither the CLI (what `atrium serve` imports before it hands over) nor the master's own
    # module may have imported prometheus_client: its value class would be fixed too early.
    for module in ("atrium.cli", "atrium.platform.supervisor"):
        imported = subprocess.run(
            [sys.executable, "-P", "-c", f"import sys, {module}; print(*sys.modules)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert "prometheus_client" not in imported, module


def test_one_worker_keeps_the_in_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert prepare_multiprocess_dir(1) is None
    assert MULTIPROC_ENV not in os.environ


def test_several_workers_get_a_private_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # Empty counts as unset; monkeypatch then removes what prepare_multiprocess_dir sets.
    monkeypatch.setenv(MULTIPROC_ENV, "")
    path = prepare_multiprocess_dir(3)
    assert path is not None
    assert path.is_dir()
    assert list(path.iterdir()) == []
    assert os.environ[MULTIPROC_ENV] == str(path)


def test_a_configured_folder_is_emptied_of_samples_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "gauge_livesum_12.db").write_bytes(b"old")
    (tmp_path / "counter_12.db").write_bytes(b"old")
    (tmp_path / "README").write_text("not ours to delete")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    assert prepare_multiprocess_dir(1) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]
