"""Which production server should ``atrium serve --workers N`` run?

Starts the same app under plain ``uvicorn --workers``, gunicorn with uvicorn workers and
granian, drives ``GET /livez`` with ``wrk`` (Debian package) against each, interleaved over
several rounds, and prints requests/s and p99 latency with ratios against plain uvicorn
measured in the same run. ``/livez`` touches no database, so this measures the server and our
middleware, not PostgreSQL.

    python -m bench.serving [--workers 2] [--seconds 5] [--rounds 2] [--connections 64]

granian and uvicorn-worker are not Atrium dependencies; the servers that are missing from the
interpreter running this are reported and left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from statistics import median

APP = "atrium.app:create_app"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def commands(workers: int, port: int) -> dict[str, list[str]]:
    """Each candidate's command line, all bound to loopback ``port``."""
    py = sys.executable
    w = str(workers)
    return {
        "uvicorn --workers": [
            *(py, "-m", "uvicorn", APP, "--factory", "--workers", w),
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
            *("--log-level", "warning"),
        ],
        "gunicorn + uvicorn-worker": [
            *(py, "-m", "gunicorn", f"{APP}()", "-k", "uvicorn_worker.UvicornWorker"),
            "--no-control-socket",
            *("-w", w, "-b", f"127.0.0.1:{port}", "--log-level", "warning"),
        ],
        "gunicorn asgi worker": [
            *(py, "-m", "gunicorn", f"{APP}()", "-k", "asgi", "--no-control-socket"),
            *("-w", w, "-b", f"127.0.0.1:{port}", "--log-level", "warning"),
        ],
        "granian": [
            *(py, "-m", "granian", "--interface", "asgi", "--factory", APP),
            *("--workers", w, "--host", "127.0.0.1", "--port", str(port)),
            *("--loop", "uvloop", "--log-level", "warning", "--no-access-log"),
        ],
    }


def available() -> dict[str, bool]:
    """Which candidates this interpreter can run."""
    return {
        "uvicorn --workers": importlib.util.find_spec("uvicorn") is not None,
        "gunicorn + uvicorn-worker": importlib.util.find_spec("uvicorn_worker") is not None,
        "gunicorn asgi worker": importlib.util.find_spec("gunicorn.asgi") is not None,
        "granian": importlib.util.find_spec("granian") is not None,
    }


def _wait_live(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _wrk(url: str, seconds: int, connections: int) -> tuple[float, float, int]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    # A server that drops connections under load is disqualified, however fast it looks.
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return rps, float(p99.group(1)) * scale, errors


def measure(
    name: str, workers: int, seconds: int, connections: int, log_level: str
) -> tuple[float, float, int]:
    """Start one candidate, warm it up, measure, stop it."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
        # The servers' own access logs are off; ours (INFO) is what production runs.
        env.update(ATRIUM_DATA_DIR=data, ATRIUM_LOG_LEVEL=log_level, ATRIUM_AUTO_MIGRATE="false")
        proc = subprocess.Popen(
            commands(workers, port)[name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/livez"
        try:
            _wait_live(url, proc)
            _wrk(url, 1, connections)  # warm-up: every worker imported and accepting
            return _wrk(url, seconds, connections)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            if proc.wait(timeout=30) not in (0, -signal.SIGTERM):
                print(f"{name}: exited with {proc.returncode} (a crash under load)")


def main(argv: list[str] | None = None) -> int:
    """Run every available candidate, interleaved, and print medians with ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--log-level", default="INFO", help="WARNING measures without access log")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("FAIL: wrk is missing (apt-get install -y wrk); nothing measured")
        return 1
    names = [name for name, ok in available().items() if ok]
    for name, ok in available().items():
        if not ok:
            print(f"skipped (not installed here): {name}")
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            results[name].append(
                measure(name, args.workers, args.seconds, args.connections, args.log_level)
            )
    base = median(r for r, _, _ in results[names[0]])
    print(
        f"GET /livez, {args.workers} workers, wrk -t1 -c{args.connections} -d{args.seconds}s, "
        f"median of {args.rounds} rounds, {os.cpu_count()} CPUs (wrk shares them), "
        f"ATRIUM_LOG_LEVEL={args.log_level}"
    )
    print(f"{'server':<28}{'req/s':>10}{'p99 ms':>10}{'errors':>8}{'vs ' + names[0]:>26}")
    for name in names:
        rps = median(r for r, _, _ in results[name])
        p99 = median(p for _, p, _ in results[name])
        errors = sum(e for _, _, e in results[name])
        print(f"{name:<28}{rps:>10.0f}{p99:>10.2f}{errors:>8}{rps / base:>25.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
