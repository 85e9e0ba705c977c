"""Schemathesis over the whole OpenAPI document, against ``atrium serve`` with two workers.

Every check runs (status codes and content types as declared, schema conformance, no 5xx,
negative data rejected, stateful links) on whichever database this run uses, after
``atrium demo`` loaded data for the requests to find.

*Concurrency.* Races only show with two clients at once, so two Schemathesis processes run side
by side (different seeds) against the server's two workers. Each uses one thread: Schemathesis'
``--workers 2`` runs its threads through ``ast`` at once, which on CPython 3.11 (our runtime)
fails with "SystemError: AST constructor recursion depth mismatch" (gh-106905, fixed only in
3.12+). Two processes share no interpreter, so they cannot hit it, and they load the server
exactly as two threads would.

*Rate limits out of the way, by configuration only.* A 429 is no finding, so the fuzzing key is
made by ``atrium apikeys create`` with a high ``--rate-limit`` and the per-address limits of
key-less requests (``ATRIUM_RATE_LIMIT``, ``ATRIUM_AUTH_RATE_LIMIT``) are set as high: the
limiter still counts every request, as in production. The run then checks on ``/metrics`` that
nothing was refused and that no request failed with a 5xx. A separate test drives the fuzzer
into a key's real limit and checks every 429 says when to retry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from atrium.settings import Settings
from tests.support import ServerProcess, run_server, secret, settings_env

MAX_EXAMPLES = os.environ.get("ATRIUM_SCHEMATHESIS_EXAMPLES", "10")
UNLIMITED = "1000000"  # requests per minute: more than any run sends
LIMITED = 20  # the limit of the key that the 429 test fuzzes with
SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")


class FuzzTarget:
    """The server under fuzzing, the key that is never limited and one that is."""

    def __init__(self, server: ServerProcess, key: str, limited_key: str) -> None:
        self.server = server
        self.key = key
        self.limited_key = limited_key


def _create_key(env: dict[str, str], owner: str, limit: int | str) -> str:
    """An admin key, made as an operator makes one."""
    created = subprocess.run(
        [
            *(sys.executable, "-m", "atrium.cli", "apikeys", "create", "--owner", owner),
            *("--scopes", "admin", "--rate-limit", str(limit)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return secret(created.stdout.strip())


@pytest.fixture(scope="module")
def fuzz_target(
    app: FastAPI, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    """``atrium serve --workers 2`` on the session's database, loaded with the demo data."""
    env = settings_env(
        settings,
        ATRIUM_RATE_LIMIT=UNLIMITED,
        ATRIUM_AUTH_RATE_LIMIT=UNLIMITED,
        ATRIUM_LOG_LEVEL="WARNING",
    )
    key = _create_key(env, "fuzz", UNLIMITED)
    limited_key = _create_key(env, "fuzz-limited", LIMITED)
    logs = tmp_path_factory.mktemp("fuzz-server")
    with run_server(env, logs, workers=2, timeout=120) as server:
        demo = subprocess.run(
            [sys.executable, "-m", "atrium.cli", "demo", "--url", server.url, "--api-key", key],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        yield FuzzTarget(server, key, limited_key)


def schemathesis(
    target: FuzzTarget, key: str, seed: int, report: Path, *extra: str, examples: str = MAX_EXAMPLES
) -> list[str]:
    """The command line of one Schemathesis process (one thread) over the whole API."""
    return [
        SCHEMATHESIS,
        "run",
        f"{target.server.url}/openapi.json",
        "--max-examples",
        examples,
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-allow-x00",
        "true",
        # Generating 100,000-character template bodies is slow on a busy 2-core CI machine:
        # a health check of the generator, not of the API.
        "--suppress-health-check",
        "too_slow",
        "-H",
        f"X-API-KEY: {key}",
        "--report-dir",
        str(report),
        *extra,
    ]


def run_side_by_side(commands: list[list[str]], timeout: float = 900) -> list[str]:
    """Start every command at once, wait for all; their outputs (each must exit 0)."""
    procs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
        for command in commands
    ]
    outputs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-20000:]
    return outputs


REPO = Path(__file__).resolve().parents[1]


def metric_samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample named ``name`` on the server's ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


@pytest.mark.slow
def test_schemathesis_finds_no_failure(fuzz_target: FuzzTarget, tmp_path: Path) -> None:
    url = fuzz_target.server.url
    # The examples and coverage phases are deterministic: one process runs them; the random
    # phases (fuzzing, stateful) run in both, with different seeds, at the same time.
    outputs = run_side_by_side(
        [
            schemathesis(fuzz_target, fuzz_target.key, 20211, tmp_path / "a", "--checks", "all"),
            schemathesis(
                fuzz_target,
                fuzz_target.key,
                20212,
                tmp_path / "b",
                "--checks",
                "all",
                "--phases",
                "fuzzing,stateful",
            ),
        ]
    )
    for output in outputs:
        assert "no issues found" in output.lower() or " passed" in output, output[-3000:]
    refused = sum(v for _, v in metric_samples(url, "atrium_rate_limit_rejections_total"))
    assert refused == 0, "the fuzzing hit a rate limit: its 429s proved nothing"
    failed = [
        (labels, value)
        for labels, value in metric_samples(url, "atrium_http_requests_total")
        if labels["status"].startswith("5")
    ]
    assert not failed, f"{failed}\n--- server log ---\n{fuzz_target.server.output()[-8000:]}"


@pytest.mark.slow
def test_limits_answer_429_with_retry_after_under_fuzzing_load(
    fuzz_target: FuzzTarget, tmp_path: Path
) -> None:
    # The same fuzzer, with a key limited to LIMITED requests a minute: it must be refused with
    # 429, every 429 must say when to retry, and no limited request may fail otherwise.
    reports = tmp_path / "report"
    run_side_by_side(
        [
            schemathesis(
                fuzz_target,
                fuzz_target.limited_key,
                20213,
                reports,
                "--checks",
                "not_a_server_error",
                "--phases",
                "examples,fuzzing",
                "--include-tag",
                "templates",
                "--report",
                "har",
                examples="5",
            )
        ]
    )
    responses = [
        entry["response"]
        for har in reports.glob("har-*.json")
        for entry in json.loads(har.read_text())["log"]["entries"]
    ]
    limited = [r for r in responses if r["status"] == 429]
    assert len(responses) > LIMITED, f"only {len(responses)} requests: no load"
    assert limited, f"{len(responses)} requests with a limit of {LIMITED}/min, none refused"
    for response in limited:
        headers = {h["name"].lower(): h["value"] for h in response["headers"]}
        assert int(headers["retry-after"]) >= 1, headers
        assert headers["ratelimit-remaining"] == "0", headers
        assert headers["content-type"] == "application/problem+json", headers
