"""How fast is ``GET /templates/{templateid}``, everything on, against two common baselines?

On PostgreSQL + Redis: Atrium (``atrium serve``) with an API key, the rate limiter, the cache,
metrics and JSON access logs all on, beside two baselines measured in the same run on the same
table (see ``bench/_templates_baselines.py``): a minimal FastAPI + asyncpg endpoint doing the
same SELECT, and the common FastAPI + sync SQLAlchemy ORM version. ``wrk`` (Debian package)
drives each over loopback with random ids out of the table; rounds are interleaved and the
median is reported.

    ATRIUM_BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    ATRIUM_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 \\
    python -m bench.templates [--workers 1] [--connections 32] [--seconds 10] [--rounds 2]

It creates (and drops) its own database, and only touches Redis keys under its own prefix.
Goals: >= 1.0x the asyncpg baseline, >= 5x the ORM one, p99 < 15 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import asyncpg

from atrium.platform.apikeys import RedisKeyStore
from atrium.platform.db import create_engine
from atrium.platform.migrate import upgrade
from atrium.platform.ratelimit import RedisHealth
from atrium.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """One wrk run."""

    rps: float
    p99_ms: float
    errors: int


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _prepare(admin_url: str, redis_url: str, rows: int) -> tuple[str, str, str, list[str]]:
    """A fresh database with ``rows`` templates, and an API key under a private prefix."""
    name = f"atrium_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    engine = create_engine(Settings(_env_file=None, database_url=dsn))  # type: ignore[call-arg]
    await upgrade(engine)
    await engine.dispose()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO templates (name, description, content) "
            "SELECT 'template-' || i, 'benchmark template ' || i, "
            "repeat('Hello {{ name }}, this is template ' || i || '. ', 12) "
            "FROM generate_series(1, $1) AS i",
            rows,
        )
        await connection.execute("ANALYZE templates")
        ids = [
            str(r["templateid"]) for r in await connection.fetch("SELECT templateid FROM templates")
        ]
    finally:
        await connection.close()
    prefix = f"atrium-bench-{uuid.uuid4().hex[:8]}:"
    from redis.asyncio import Redis

    redis: Any = Redis.from_url(redis_url)
    try:
        store = RedisKeyStore(redis, prefix, RedisHealth(True))
        # A limit far above what wrk can send: the limiter runs on every request, never refuses.
        key, _ = await store.create("bench", ("templates:read",), rate_limit=10**9)
    finally:
        await redis.aclose()
    return dsn, prefix, key, ids


async def _cleanup(admin_url: str, dsn: str, redis_url: str, prefix: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()
    from redis.asyncio import Redis

    redis: Any = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def _wrk_script(directory: Path, ids: list[str], key: str) -> Path:
    path = directory / "templates.lua"
    quoted = ",".join(f'"{i}"' for i in ids)
    path.write_text(
        f"local ids = {{{quoted}}}\n"
        "math.randomseed(42)\n"
        "request = function()\n"
        '  return wrk.format("GET", "/templates/" .. ids[math.random(#ids)], '
        f'{{["X-API-KEY"] = "{key}"}})\n'
        "end\n"
    )
    return path


def _wrk(url: str, script: Path, connections: int, seconds: int) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = 0
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if match:
        errors += int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if match:
        errors += sum(int(g) for g in match.groups())
    return Result(rps, p99, errors)


class Server:
    """A server process on loopback, stopped with SIGTERM."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env = env
        self.log = log

    def __enter__(self) -> Server:
        self.out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/templates/{uuid.uuid4()}", timeout=1)
            except urllib.error.HTTPError:
                break  # 401/404: it answers
            except OSError:
                time.sleep(0.2)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.command} did not start") from None
                continue
            break
        return self

    def __exit__(self, *_: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table (0 when every goal is met)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.templates needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    admin_url = os.environ.get(
        "ATRIUM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("ATRIUM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    dsn, prefix, key, ids = asyncio.run(_prepare(admin_url, redis_url, args.rows))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    base_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), base_env.get("PYTHONPATH", "")]
    )
    workers = str(args.workers)
    py = sys.executable
    uvicorn = [py, "-m", "uvicorn", "--factory", "--host", "127.0.0.1", "--port", "{port}"]
    uvicorn += ["--workers", workers, "--no-access-log", "--log-level", "warning"]
    targets: dict[str, tuple[list[str], dict[str, str]]] = {
        "atrium (key, limiter, cache, metrics, logs)": (
            [py, "-m", "atrium.cli", "serve", "--port", "{port}", "--workers", workers],
            {
                **base_env,
                "ATRIUM_DATABASE_URL": dsn,
                "ATRIUM_REDIS_URL": redis_url,
                "ATRIUM_REDIS_PREFIX": prefix,
                "ATRIUM_LOG_LEVEL": "INFO",
                "ATRIUM_ENV": "development",
            },
        ),
        "FastAPI + asyncpg (minimal)": (
            [*uvicorn, "bench._templates_baselines:asyncpg_app"],
            {**base_env, "BENCH_DSN": dsn},
        ),
        "FastAPI + sync SQLAlchemy ORM": (
            [*uvicorn, "bench._templates_baselines:orm_app"],
            {**base_env, "BENCH_DSN": dsn},
        ),
    }
    results: dict[str, list[Result]] = {name: [] for name in targets}
    try:
        with tempfile.TemporaryDirectory(prefix="atrium-bench-") as tmp:
            directory = Path(tmp)
            script = _wrk_script(directory, ids, key)
            for round_no in range(args.rounds):
                for name, (command, env) in targets.items():
                    with Server(
                        command, env, directory / f"{len(results[name])}-{round_no}.log"
                    ) as s:
                        _wrk(s.url, script, args.connections, args.warmup)
                        result = _wrk(s.url, script, args.connections, args.seconds)
                    results[name].append(result)
                    print(
                        f"round {round_no + 1}: {name}: {result.rps:,.0f} req/s, "
                        f"p99 {result.p99_ms:.2f} ms, errors {result.errors}",
                        file=sys.stderr,
                    )
    finally:
        asyncio.run(_cleanup(admin_url, dsn, redis_url, prefix))

    summary = {
        name: (
            median(r.rps for r in runs),
            median(r.p99_ms for r in runs),
            sum(r.errors for r in runs),
        )
        for name, runs in results.items()
    }
    names = list(targets)
    ours, minimal, orm = (summary[n][0] for n in names)
    print(
        f"\nGET /templates/{{templateid}}: {args.rows} rows, {args.connections} connections, "
        f"{args.workers} worker(s) each, {args.seconds}s x {args.rounds} rounds (median)\n"
    )
    print(f"| {'server':<45} | {'req/s':>9} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"|{'-' * 47}|{'-' * 11}|{'-' * 9}|{'-' * 8}|")
    for name in names:
        rps, p99, errors = summary[name]
        print(f"| {name:<45} | {rps:>9,.0f} | {p99:>7.2f} | {errors:>6} |")
    p99 = summary[names[0]][1]
    print(
        f"\natrium / asyncpg minimal = {ours / minimal:.2f}x (goal >= 1.0x); "
        f"atrium / sync ORM = {ours / orm:.2f}x (goal >= 5x); "
        f"atrium p99 = {p99:.2f} ms (goal < 15 ms)"
    )
    met = ours >= minimal and ours >= 5 * orm and p99 < 15 and not summary[names[0]][2]
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
