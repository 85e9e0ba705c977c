"""The examples runner itself: marks, sessions, wildcards, and that a difference is caught."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.docs.examples import marked_blocks, mismatches, script

PAGE = """# A page

```sh
echo "not marked: never runs" && exit 3
```

<!-- run -->
```sh
GREETING=hello
```

<!-- run -->
```console
$ echo "$GREETING from http://127.0.0.1:8000/x"
hello from http://127.0.0.1:8000/x
$ printf '{"id": 7, "at": "2026-01-01"}'
{"id": 7, "at": "…"}
$ printf 'a\\nb\\nc\\nlast\\n'
a
...
last
$ true
$ echo one \\
    two
one two
```
"""
REWRITE = {"http://127.0.0.1:8000": "http://127.0.0.1:59999"}


def run(page: str, tmp_path: Path) -> tuple[list[str], int]:
    (tmp_path / "page.md").write_text(page)
    blocks = marked_blocks(tmp_path / "page.md", tmp_path)
    result = subprocess.run(
        ["bash", "--noprofile", "--norc"],
        input=script(blocks, REWRITE),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return mismatches(blocks, result.stdout, REWRITE), result.returncode


def test_a_page_that_matches(tmp_path: Path) -> None:
    assert run(PAGE, tmp_path) == ([], 0)


@pytest.mark.parametrize(
    ("shown", "changed"),
    [
        ('{"id": 7, "at": "…"}', '{"id": 8, "at": "…"}'),  # a changed value
        ("$ true\n", "$ true\nsomething\n"),  # output where none is printed
        ("a\n...\nlast", "a\n...\nfirst"),  # the line after the wildcard lines
        ("hello from", "hi from"),  # a variable set in an earlier block
    ],
)
def test_a_difference_is_reported(tmp_path: Path, shown: str, changed: str) -> None:
    assert shown in PAGE
    problems, _ = run(PAGE.replace(shown, changed, 1), tmp_path)
    assert len(problems) == 1
    assert "page.md:" in problems[0]
    assert "--- it printed:" in problems[0]


def test_a_failing_script_block_stops_the_run(tmp_path: Path) -> None:
    _, status = run(PAGE.replace("GREETING=hello", "GREETING=hello; false"), tmp_path)
    assert status != 0


def test_a_mark_must_precede_a_runnable_block(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text("<!-- run -->\n```json\n{}\n```\n")
    with pytest.raises(ValueError, match="cannot run a 'json' block"):
        marked_blocks(tmp_path / "bad.md", tmp_path)
