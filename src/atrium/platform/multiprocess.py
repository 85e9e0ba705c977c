"""prometheus_client's multiprocess mode for ``atrium serve --workers N``.

Each worker writes its samples to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``.
``atrium serve`` prepares that folder before workers start (:func:`prepare_multiprocess_dir`),
empties it on every start, and marks workers that died (:class:`DeadWorkerReaper`) so their
in-flight and pool gauges stop counting; their counters stay, as counters must.

Nothing here imports the metric objects: the supervising process must not create samples.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("atrium.metrics")


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """Before workers start: an empty ``PROMETHEUS_MULTIPROC_DIR`` when it is needed.

    A configured folder is emptied of old samples; with several workers and none configured a
    private temporary one is made (and removed at exit). One worker and none configured keeps
    the ordinary in-process registry, which also has the process and GC collectors.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        # Samples of a previous run would be added to this one's.
        for stale in path.glob("*.db"):
            stale.unlink()
    elif workers > 1:
        path = Path(tempfile.mkdtemp(prefix="atrium-metrics-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    else:
        return None
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_workers(path: Path) -> list[int]:
    """Mark processes that left samples in ``path`` and no longer exist as dead."""
    from prometheus_client import multiprocess

    dead = []
    for pid in sorted(worker_pids(path)):
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
            dead.append(pid)
    return dead


def worker_pids(path: Path) -> set[int]:
    """Processes that have live gauges in ``path`` (every worker has the in-flight gauge)."""
    pids = set()
    for file in path.glob("gauge_live*_*.db"):
        suffix = file.stem.rpartition("_")[2]
        if suffix.isdigit():
            pids.add(int(suffix))
    return pids


class DeadWorkerReaper(threading.Thread):
    """Runs in the supervising process: a worker killed without a clean exit is marked dead."""

    def __init__(self, path: Path, interval: float = 2.0) -> None:
        super().__init__(name="atrium-metrics-reaper", daemon=True)
        self.path = path
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        """Look for dead workers every ``interval`` seconds until stopped."""
        while not self.stopped.wait(self.interval):
            try:
                for pid in mark_dead_workers(self.path):
                    log.info("metrics of a dead worker released", extra={"pid": pid})
            except OSError as exc:
                log.warning("metrics reaper failed", extra={"error": str(exc)})

    def stop(self) -> None:
        """Stop after the current round."""
        self.stopped.set()


def mark_this_process_dead() -> None:
    """A worker leaving cleanly releases its live gauges itself."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
