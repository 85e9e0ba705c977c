"""Metrics with several worker processes: counters add up across workers, a dead worker's
gauges are released, and every start begins from an empty multiprocess folder."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from atrium.platform.multiprocess import MULTIPROC_ENV, prepare_multiprocess_dir, worker_pids
from atrium.settings import Settings
from tests.platform.promtool import promtool_check
from tests.support import run_server, settings_env

# Requests only this test makes (run_server's readiness checks go to /livez).
UNMATCHED = {"method": "GET", "route": "<unmatched>", "status": "404"}


def unmatched_count(text: str) -> float:
    """``atrium_http_requests_total`` of this test's requests in an exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "atrium_http_requests_total" and sample.labels == UNMATCHED:
                return sample.value
    return 0.0


def served_by_worker(metrics_dir: Path) -> dict[int, float]:
    """How many of this test's requests each worker served, read from its own sample file."""
    counts: dict[int, float] = {}
    for file in metrics_dir.glob("counter_*.db"):
        pid = int(file.stem.rpartition("_")[2])
        for metric in MultiProcessCollector.merge([str(file)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                if sample.name == "atrium_http_requests_total" and sample.labels == UNMATCHED:
                    counts[pid] = sample.value
    return counts


def wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


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


def test_one_worker_keeps_the_in_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert prepare_multiprocess_dir(1) is None
    assert MULTIPROC_ENV not in os.environ


def test_several_workers_get_a_private_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    path = prepare_multiprocess_dir(3)
    assert path is not None
    assert path.is_dir()
    assert list(path.iterdir()) == []
    assert os.environ[MULTIPROC_ENV] == str(path)
    monkeypatch.delenv(MULTIPROC_ENV)


def test_a_configured_folder_is_emptied_of_samples_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "gauge_livesum_12.db").write_bytes(b"old")
    (tmp_path / "counter_12.db").write_bytes(b"old")
    (tmp_path / "README").write_text("not ours to delete")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    assert prepare_multiprocess_dir(1) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]
