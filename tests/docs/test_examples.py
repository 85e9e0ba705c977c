"""Every example of the README and docs/ marked ``<!-- run -->`` runs against the demo server.

Run as a reader runs them: after ``atrium demo``, from an empty folder that has the ``.venv``,
with the CLI on the ``PATH`` and the server's data folder in the environment; the reader's
``http://127.0.0.1:8000`` is pointed at the test server. A command that fails in a ``sh``
block, or output that differs from what a ``console`` block shows, fails the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.conftest import DemoServer
from tests.docs.examples import (
    Block,
    block_of_step,
    marked_blocks,
    mismatches,
    script,
    steps_done,
)

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
WITH_EXAMPLES = [page for page in PAGES if marked_blocks(page, ROOT)]


def test_the_readme_and_the_area_pages_have_examples_that_run() -> None:
    names = {str(page.relative_to(ROOT)) for page in WITH_EXAMPLES}
    assert {
        "README.md",
        "docs/getting-started.md",
        "docs/hr.md",
        "docs/market.md",
        "docs/certificates.md",
        "docs/api-keys.md",
        "docs/operations.md",
        "docs/templates.md",
    } <= names


@pytest.mark.parametrize("page", WITH_EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run_as_shown(demo_server: DemoServer, page: Path, tmp_path: Path) -> None:
    blocks: list[Block] = marked_blocks(page, ROOT)
    host = demo_server.url.removeprefix("http://")
    rewrite = {"http://127.0.0.1:8000": demo_server.url, "localhost:8000": host}
    venv = Path(sys.prefix)
    (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)
    env = dict(demo_server.env)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    result = subprocess.run(
        ["bash", "--noprofile", "--norc"],
        input=script(blocks, rewrite),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        block = block_of_step(blocks, steps_done(result.stdout))
        where = block.where if block else str(page.relative_to(ROOT))
        pytest.fail(f"{where}: exited {result.returncode}:\n{result.stdout[-3000:]}")
    problems = mismatches(blocks, result.stdout, rewrite)
    assert not problems, "\n\n".join(problems)
