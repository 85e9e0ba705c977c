"""Schemathesis over the certificates endpoints *with* credentials (the whole-API contract test
runs anonymously, so there every protected operation stops at 401): an administrator key
reaches validation, storage and encryption, where NUL bytes and out-of-range ids must be 422s
and nothing may be a 5xx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI

from atrium.settings import Settings
from tests.support import run_server, settings_env

ADMIN_KEY = "contract-admin-key-0123456789"
MAX_EXAMPLES = os.environ.get("ATRIUM_SCHEMATHESIS_EXAMPLES", "25")


def test_schemathesis_with_admin_key_finds_no_failure(
    clean: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    executable = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    env = settings_env(settings, ATRIUM_ADMIN_API_KEY=ADMIN_KEY, ATRIUM_LOG_LEVEL="WARNING")
    with run_server(env, tmp_path / "logs") as server:
        command = [
            executable,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--include-path-regex",
            "^/(users|auth)",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "4",
            "--request-timeout",
            "10",
            "--workers",
            "1",
            "--generation-allow-x00",
            "true",
            "--report-dir",
            str(tmp_path / "report"),
            "-H",
            f"X-API-KEY: {ADMIN_KEY}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, (
            output[-20000:] + "\n--- server log ---\n" + server.output()[-5000:]
        )
    assert "passed" in output.lower()
