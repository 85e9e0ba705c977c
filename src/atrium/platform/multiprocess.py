"""prometheus_client's multiprocess mode for ``atrium serve --workers N``.

Each worker writes its samples to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and any
worker answers a scrape with the sum over all of them. prometheus_client chooses between
in-process values and those files once, when it is first imported, from that variable: a
process that imported it before the variable was set keeps in-process values, and so does
every worker it forks, and ``/metrics`` then reads an empty folder. So the gunicorn master
(:mod:`atrium.platform.supervisor`) sets the variable before anything imports prometheus_client,
and :func:`check_value_class` refuses to start a process where that order was broken.

Nothing here imports prometheus_client at module level.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """Before workers start: an empty ``PROMETHEUS_MULTIPROC_DIR`` when it is needed.

    A configured folder is emptied of old samples; with several workers and none configured a
    private temporary one is made (and removed when this process, not a worker, exits). One
    worker and none configured keeps the ordinary in-process registry, which also has the
    process and GC collectors.
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
        # Forked workers inherit atexit handlers and leave with sys.exit (on a recycle too):
        # only the process that made the folder may remove it.
        atexit.register(_remove_if_owner, path, os.getpid())
    else:
        return None
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _remove_if_owner(path: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def check_value_class() -> None:
    """Refuse to run where ``PROMETHEUS_MULTIPROC_DIR`` is set but samples cannot reach it.

    That happens when prometheus_client was imported before the variable was set (its value
    class is fixed at import): the process would serve an empty or partial ``/metrics``.
    """
    path = os.environ.get(MULTIPROC_ENV)
    values = sys.modules.get("prometheus_client.values")
    if not path or values is None:
        return
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(
            f"{MULTIPROC_ENV} was set after prometheus_client had been imported, so this "
            "process's metrics would never reach it: set it in the environment the server "
            "starts with (or let `atrium serve` choose one)"
        )


def worker_pids(path: Path) -> set[int]:
    """Processes that have live gauges in ``path`` (every worker has the in-flight gauge)."""
    pids = set()
    for file in path.glob("gauge_live*_*.db"):
        suffix = file.stem.rpartition("_")[2]
        if suffix.isdigit():
            pids.add(int(suffix))
    return pids


def mark_this_process_dead() -> None:
    """A worker leaving cleanly releases its live gauges itself."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
