"""The real app plus one route that stays in flight until the test releases it.

Served by ``atrium serve --app tests.deploy.slowapp:create_app`` in the drain tests: the route
touches ``$ATRIUM_TEST_GATE_DIR/<name>.started`` and answers once ``<name>.release`` exists, so
a test knows exactly when a request is in flight and decides when it may finish.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import FastAPI

from atrium.app import create_app as create_atrium_app

GATE_WAIT_LIMIT = 60.0  # seconds; a forgotten release never hangs a worker for ever


def create_app() -> FastAPI:
    """Atrium with ``GET /_test/gate/{name}`` added."""
    app = create_atrium_app()
    gate_dir = Path(os.environ["ATRIUM_TEST_GATE_DIR"])

    @app.get("/_test/gate/{name}", include_in_schema=False)
    async def gate(name: str) -> dict[str, str]:
        (gate_dir / f"{name}.started").touch()
        release = gate_dir / f"{name}.release"
        async with asyncio.timeout(GATE_WAIT_LIMIT):
            while not release.exists():  # noqa: ASYNC110 - a file is the cross-process signal
                await asyncio.sleep(0.02)
        return {"gate": name, "pid": str(os.getpid())}

    return app
