"""The background log writer: order, flush, a stuck stdout, fork and exit lose nothing."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from atrium.platform.logging import BackgroundStreamHandler, JsonFormatter


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    return log


def test_lines_arrive_in_order_and_flush_waits_for_them() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = _logger(handler, "atrium.test.writer.order")
    try:
        for i in range(2000):
            log.info("line %d", i, extra={"n": i})
        handler.flush()
        lines = stream.getvalue().splitlines()
        assert [orjson.loads(line)["n"] for line in lines] == list(range(2000))
        assert orjson.loads(lines[0])["msg"] == "line 0"
    finally:
        handler.close()


class _StuckStream(io.StringIO):
    """stdout whose reader has stopped reading: ``write`` blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        assert self.release.wait(timeout=30)
        return super().write(text)


def test_a_stuck_stdout_drops_and_counts_lines_instead_of_blocking() -> None:
    stream = _StuckStream()
    handler = BackgroundStreamHandler(stream, interval=0, max_pending=10)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = _logger(handler, "atrium.test.writer.stuck")
    try:
        log.info("first")
        assert stream.entered.wait(timeout=30)  # the writer thread is stuck in write()
        for i in range(15):  # the caller goes on: 10 lines wait, the other 5 are dropped
            log.info("queued %d", i)
        assert handler.dropped == 5
        stream.release.set()
        handler.flush()  # waits for the writer's write (same lock), then writes the rest
        lines = stream.getvalue().splitlines()
    finally:
        stream.release.set()
        handler.close()
    assert lines[0] == "first"
    assert lines[1:11] == [f"queued {i}" for i in range(10)]
    assert lines[11] == "5 log lines dropped: the output did not keep up"
    assert len(lines) == 12


def test_a_forked_child_writes_its_own_lines_and_not_the_parents(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    stream = path.open("a", buffering=1)
    handler = BackgroundStreamHandler(stream, interval=0.5)  # the parent's line still waits
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = _logger(handler, "atrium.test.writer.fork")
    try:
        log.info("parent before fork")
        pid = os.fork()
        if pid == 0:  # the child: log, flush, leave without running the parent's cleanup
            log.info("child")
            handler.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        log.info("parent after fork")
        handler.flush()
    finally:
        handler.close()
        stream.close()
    lines = path.read_text().splitlines()
    assert sorted(lines) == ["child", "parent after fork", "parent before fork"]
    assert lines.index("parent before fork") < lines.index("parent after fork")


def test_lines_logged_just_before_exit_are_written() -> None:
    code = (
        "import logging\n"
        "from atrium.platform.logging import configure_logging\n"
        "configure_logging('INFO')\n"
        "for i in range(500): logging.getLogger('atrium.exit').info('line %d', i)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["msg"] for line in lines] == [f"line {i}" for i in range(500)]
