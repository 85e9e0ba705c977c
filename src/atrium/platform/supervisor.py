"""The gunicorn master process that ``atrium serve`` turns into (``os.exec``, same pid).

``atrium serve`` migrates and creates the first key, which imports the whole application and
with it prometheus_client; then it replaces itself with this module in a fresh interpreter so
that the multiprocess metrics folder is chosen *before* prometheus_client is imported here and
in every worker forked from here (:mod:`atrium.platform.multiprocess` says why that matters).

Only the standard library and :mod:`atrium.platform.multiprocess` are imported before that.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from atrium.platform.multiprocess import prepare_multiprocess_dir


def command(*, host: str, port: int, workers: int, app: str) -> list[str]:
    """The argv that runs the master in a fresh interpreter.

    ``-P``: the working directory (``/tmp`` in the image) must not shadow installed modules.
    """
    return [
        sys.executable,
        "-P",
        "-m",
        __name__,
        f"--host={host}",
        f"--port={port}",
        f"--workers={workers}",
        f"--app={app}",
    ]


def exec_master(*, host: str, port: int, workers: int, app: str) -> NoReturn:
    """Become the gunicorn master (same pid, so signals and exit codes stay the caller's)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # exec discards what the caller printed but did not flush
    argv = command(host=host, port=port, workers=workers, app=app)
    os.execv(argv[0], argv)  # noqa: S606 - our own interpreter, argv built above


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare the metrics folder, then run gunicorn until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="atrium serve (master)")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--app", required=True)
    args = parser.parse_args(argv)
    # Workers inherit PROMETHEUS_MULTIPROC_DIR, so it must exist (and be empty) before them.
    prepare_multiprocess_dir(args.workers)

    from atrium.platform.server import serve
    from atrium.settings import get_settings

    serve(get_settings(), host=args.host, port=args.port, workers=args.workers, app=args.app)


if __name__ == "__main__":
    main()
