"""The gunicorn master process that ``atrium serve`` turns into (``os.exec``, same pid).

``atrium serve`` replaces itself with this module in a fresh interpreter, whatever the CLI had
imported, so that the multiprocess metrics folder is chosen *before* prometheus_client is
imported here and in every worker forked from here (:mod:`atrium.platform.multiprocess` says
why that matters). Then this process does the one-off work (migrations on the embedded
default, the first admin key) and runs gunicorn.

Only the standard library and :mod:`atrium.platform.multiprocess` are imported before that.
"""

from __future__ import annotations

import argparse
import asyncio
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
    """Set up metrics, migrate (embedded default), show the first key, run gunicorn."""
    parser = argparse.ArgumentParser(prog="atrium serve (master)")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--app", required=True)
    args = parser.parse_args(argv)
    # Workers inherit PROMETHEUS_MULTIPROC_DIR, so it must exist (and be empty) before them,
    # and before this process imports prometheus_client (below).
    prepare_multiprocess_dir(args.workers)

    from atrium.platform.apikeys.cli import bootstrap_admin_key, print_bootstrap_key
    from atrium.platform.keyfile import save_admin_key
    from atrium.platform.migrate import migrate_database
    from atrium.platform.server import serve
    from atrium.settings import get_settings

    settings = get_settings()
    if settings.should_auto_migrate:
        # Once here, before workers start, so N workers never race on it.
        asyncio.run(migrate_database(settings))
        os.environ["ATRIUM_AUTO_MIGRATE"] = "false"
    # The embedded default's first start creates an admin key and shows it once.
    first_key = asyncio.run(bootstrap_admin_key(settings))
    if first_key is not None:
        print_bootstrap_key(first_key, save_admin_key(settings, first_key))
    # Worker processes read their settings from the environment; they must know how many
    # siblings they have (the in-process cache turns itself off with more than one).
    os.environ["ATRIUM_WORKERS"] = str(args.workers)
    # Workers are forked from this process: drop the settings read before the changes above.
    get_settings.cache_clear()
    serve(get_settings(), host=args.host, port=args.port, workers=args.workers, app=args.app)


if __name__ == "__main__":
    main()
