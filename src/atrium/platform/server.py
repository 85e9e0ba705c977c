"""``atrium serve``: a gunicorn master supervising uvicorn workers (README, "Serving" says why).

SIGTERM is a graceful stop: the master closes the listening socket at once (new connections are
refused, so a balancer moves on to another replica), every worker stops accepting, closes its
idle keep-alive connections, lets in-flight requests finish for up to ``graceful_timeout``
seconds and runs the app's shutdown (engines, Redis) before it exits.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from uvicorn_worker import UvicornWorker

from atrium.platform.logging import configure_logging
from atrium.platform.multiprocess import MULTIPROC_ENV, check_value_class
from atrium.settings import Settings

DEFAULT_APP = "atrium.app:create_app"
# Seconds the master waits past the workers' own drain deadline, for the app's shutdown.
SHUTDOWN_MARGIN = 5


class AtriumWorker(UvicornWorker):  # type: ignore[misc]
    """A uvicorn worker that drains in-flight requests on SIGTERM within the graceful timeout."""

    # Client addresses are the app's business (ATRIUM_TRUSTED_PROXIES), not the server's.
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",
        "http": "auto",
        "proxy_headers": False,
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn_worker leaves this unset (wait forever); the master would then SIGKILL the
        # worker mid-shutdown. Draining for our own deadline lets lifespan shutdown run.
        self.config.timeout_graceful_shutdown = max(
            1, int(self.cfg.graceful_timeout) - SHUTDOWN_MARGIN
        )


class AtriumLogger(Logger):  # type: ignore[misc]
    """gunicorn's own messages through our root handler, so the master logs JSON too."""

    def setup(self, cfg: Any) -> None:
        """Keep gunicorn's levels, drop its handlers, let records reach the root logger."""
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.handlers.clear()
            log.propagate = True


def release_worker_metrics(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit``: a worker is gone (even SIGKILLed), so its live gauges go too."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]


def load_factory(spec: str) -> Callable[[], Any]:
    """Import ``module:callable`` (the ASGI app factory to serve)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"app must look like module:factory, got {spec!r}")
    factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attr)
    return factory


def bind_address(host: str, port: int) -> str:
    """gunicorn's bind string; IPv6 literals need brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def gunicorn_options(
    settings: Settings, *, host: str, port: int, workers: int
) -> dict[str, object]:
    """Every gunicorn setting we rely on, derived from ``Settings``."""
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs: heartbeats work on a read-only root fs
    return {
        "bind": [bind_address(host, port)],
        "workers": workers,
        "worker_class": f"{AtriumWorker.__module__}.{AtriumWorker.__qualname__}",
        "graceful_timeout": settings.graceful_timeout + SHUTDOWN_MARGIN,
        "timeout": settings.worker_timeout,
        "keepalive": settings.keepalive_timeout,
        "max_requests": settings.max_requests,
        "max_requests_jitter": settings.max_requests // 10,
        "backlog": settings.backlog,
        "worker_tmp_dir": str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None,
        # The control socket lives under $HOME: breaks read-only root file systems and would
        # be shared by replicas started from one account on one machine.
        "control_socket_disable": True,
        "loglevel": settings.log_level.lower(),
        "errorlog": "-",
        "logger_class": f"{AtriumLogger.__module__}.{AtriumLogger.__qualname__}",
        "accesslog": None,  # our middleware writes the access log
        "proc_name": f"atrium:{settings.replica_name}",
        "preload_app": False,  # each worker builds its own engines after the fork
        "forwarded_allow_ips": "",
        "child_exit": release_worker_metrics,
    }


class AtriumServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from code, serving an app factory imported in each worker."""

    def __init__(self, app: str, options: dict[str, object]) -> None:
        self.app_spec = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply ``options``; gunicorn's own command line and config files are not read."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the app inside the worker (after the fork)."""
        return load_factory(self.app_spec)()


def serve(
    settings: Settings, *, host: str, port: int, workers: int, app: str = DEFAULT_APP
) -> None:
    """Run the server in the foreground until SIGTERM/SIGINT."""
    configure_logging(settings.log_level, json=settings.log_json)
    load_factory(app)  # fail here, in the master, on a typo
    check_value_class()  # ... or on metrics that would never reach /metrics
    AtriumServer(app, gunicorn_options(settings, host=host, port=port, workers=workers)).run()
