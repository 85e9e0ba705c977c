"""``promtool check metrics`` for tests: present in CI (a missing one fails there), skipped
visibly elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def promtool_or_fail() -> str:
    """``promtool``; in CI its absence is a failure, locally a visible skip."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("promtool is missing in CI (Debian package `prometheus`)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return promtool


def promtool_check(text: str) -> None:
    """Fail with promtool's complaints unless ``text`` passes ``promtool check metrics``."""
    result = subprocess.run(
        [promtool_or_fail(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
