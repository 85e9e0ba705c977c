"""The image's entrypoint as deploy/Dockerfile and compose.yaml start it: two workers, nothing
else set, and ``/metrics`` adds up what both workers served (issue 11.1: it used to be empty)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.deploy.shipped import (
    HTTP_REQUESTS,
    compose_command,
    exposed,
    load_every_worker,
    on_this_machine,
    read_image,
    serving,
)
from tests.platform.promtool import promtool_check
from tests.support import free_port

UNMATCHED = {"method": "GET", "route": "<unmatched>", "status": "404"}


def test_the_dockerfile_is_read_as_docker_would() -> None:
    image = read_image()
    assert image.entrypoint == ["atrium"]
    assert image.cmd == ["serve"]
    assert image.env["PATH"].startswith("/opt/atrium/bin:/usr/local/sbin:")
    assert "PROMETHEUS_MULTIPROC_DIR" not in image.env
    assert "ATRIUM_ENV" not in image.env  # the image runs with the settings' defaults


@pytest.mark.slow
def test_image_entrypoint_with_two_workers_serves_both_workers_metrics(tmp_path: Path) -> None:
    image = read_image()
    # compose.yaml's api service: the image's entrypoint with `serve --workers 2`.
    launch = on_this_machine(
        image, compose_command("api"), {}, tmp=tmp_path / "container-tmp", port=free_port()
    )
    assert launch.argv == ["atrium", "serve", "--workers", "2"]
    with serving(launch, tmp_path / "server.log") as server:
        sent, per_worker = load_every_worker(
            server.url, server.proc.pid, "/no-such-page", UNMATCHED, {}
        )
        assert len(per_worker) == 2
        # Whichever worker answers the scrape reports what both of them served.
        for _ in range(4):
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert exposed(text, HTTP_REQUESTS, UNMATCHED) == sent, text[:2000]
        promtool_check(text)
