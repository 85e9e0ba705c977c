"""What the HTTP benchmarks share: a database and keys to read, servers on loopback, ``wrk``.

``wrk`` (Debian package) drives every server through a Lua script that picks a random path
per request and prints, when done, one ``BENCH {json}`` line with the request count and the
latency percentiles (p50, p99, p99.9) from wrk's own full histogram.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from atrium.platform.db import create_engine
from atrium.platform.migrate import upgrade
from atrium.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# An Argon2id hash nobody logs in with: the benchmarks authenticate as an administrator.
_PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$YmVuY2hzYWx0$QWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo"


@dataclass(frozen=True)
class Result:
    """One wrk run: throughput, latency percentiles (ms), failed requests, server CPU."""

    rps: float
    p50: float
    p99: float
    p999: float
    errors: int
    requests: int = 0
    # CPU time of the server's processes per request (µs): unlike throughput and latency it
    # hardly depends on what else the machine is running.
    cpu_us: float = 0.0


@dataclass(frozen=True)
class Dataset:
    """A private database and Redis prefix holding what the benchmarks read."""

    admin_url: str
    dsn: str
    redis_url: str
    prefix: str
    template_ids: list[str]
    user_ids: list[int]
    templates_key: str
    admin_key: str


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _key_record(owner: str, scopes: list[str]) -> tuple[str, str, bytes]:
    # The stored shape of an API key (see atrium.platform.apikeys): the key's SHA-256 is the
    # hash field, the record is JSON. A limit far above what wrk sends: the limiter runs on
    # every request and never refuses.
    key = "atr_" + secrets.token_urlsafe(32)
    record = {
        "id": secrets.token_hex(8),
        "owner": owner,
        "scopes": scopes,
        "rate_limit": 10**9,
        "created": "2026-01-01T00:00:00Z",
        "revoked": None,
    }
    return key, hashlib.sha256(key.encode()).hexdigest(), orjson.dumps(record)


async def prepare(
    admin_url: str, redis_url: str, templates: int, users: int, certificates: int
) -> Dataset:
    """A fresh database with templates, users and their certificates, and two API keys."""
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
            templates,
        )
        await connection.execute(
            "INSERT INTO users (name, email, email_key, password_hash) "
            "SELECT 'User ' || i, 'user' || i || '@example.com', 'user' || i || '@example.com', "
            "$2 FROM generate_series(1, $1) AS i",
            users,
            _PASSWORD_HASH,
        )
        await connection.execute(
            "INSERT INTO certificates (user_id, body, active, private_key_encrypted) "
            "SELECT u.id, '-----BEGIN CERTIFICATE-----\n' || repeat('A', 800) "
            "|| '\n-----END CERTIFICATE-----', i % 3 <> 0, 'bench:' || md5(u.id || '-' || i) "
            "FROM users AS u, generate_series(1, $1) AS i",
            certificates,
        )
        await connection.execute("ANALYZE")
        template_ids = [
            str(r[0]) for r in await connection.fetch("SELECT templateid FROM templates")
        ]
        user_ids = [r[0] for r in await connection.fetch("SELECT id FROM users")]
    finally:
        await connection.close()
    prefix = f"atrium-bench-{uuid.uuid4().hex[:8]}:"
    from redis.asyncio import Redis

    redis: Any = Redis.from_url(redis_url)
    try:
        templates_key, templates_hash, templates_record = _key_record("bench", ["templates:read"])
        admin_key, admin_hash, admin_record = _key_record("bench-admin", ["admin"])
        await redis.hset(
            f"{prefix}sec_apikeys",
            mapping={templates_hash: templates_record, admin_hash: admin_record},
        )
    finally:
        await redis.aclose()
    return Dataset(
        admin_url, dsn, redis_url, prefix, template_ids, user_ids, templates_key, admin_key
    )


async def forget_cache(data: Dataset) -> None:
    """Drop every cache entry under the dataset's prefix (what a cold start finds)."""
    await _delete(data.redis_url, f"{data.prefix}cache:*")


async def cleanup(data: Dataset) -> None:
    """Drop the database and every Redis key under the prefix."""
    admin = await asyncpg.connect(data.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{data.dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()
    await _delete(data.redis_url, f"{data.prefix}*")


async def _delete(redis_url: str, pattern: str) -> None:
    from redis.asyncio import Redis

    redis: Any = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    finally:
        await redis.aclose()


_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50": %d, "p99": %d, "p999": %d, '
    .. '"errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_script(
    directory: Path, name: str, paths: list[str], headers: dict[str, str], *, in_order: bool = False
) -> Path:
    """A wrk script requesting a random one of ``paths`` (same seed every run), or each in turn."""
    path = directory / f"{name}{'-in-order' if in_order else ''}.lua"
    quoted = ",".join(f'"{p}"' for p in paths)
    header_table = ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items())
    pick = "paths[(counter % #paths) + 1]" if in_order else "paths[math.random(#paths)]"
    path.write_text(
        f"local paths = {{{quoted}}}\n"
        f"local headers = {{{header_table}}}\n"
        "local counter = 0\n"
        "math.randomseed(42)\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        f'  return wrk.format("GET", {pick}, headers)\n'
        "end\n" + _DONE
    )
    return path


def warm(url: str, script: Path, paths: int, connections: int) -> None:
    """Request every path at least once (``script`` made with ``in_order``): a warm cache."""
    done = 0
    while done < paths:
        done += wrk(url, script, connections, 2).requests


def wrk(url: str, script: Path, connections: int, seconds: int) -> Result:
    """Drive ``url`` for ``seconds`` with one wrk thread and ``connections`` connections."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = orjson.loads(line[6:])
    return Result(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50=data["p50"] / 1000,
        p99=data["p99"] / 1000,
        p999=data["p999"] / 1000,
        errors=data["errors"],
        requests=data["requests"],
    )


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in process group ``pgid`` (Linux)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # fields from "state": state, ppid, pgrp, ... utime, stime
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


class Server:
    """A server process on loopback, answering ``ready_path``; stopped with SIGTERM."""

    def __init__(
        self, command: list[str], env: dict[str, str], log: Path, ready_path: str = "/livez"
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env = env
        self.log = log
        self.ready_path = ready_path

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
                urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=1).close()
            except urllib.error.HTTPError:
                break  # it answers (a 404 is an answer)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.command} did not start") from None
                time.sleep(0.05)
                continue
            break
        return self

    def measure(self, script: Path, connections: int, seconds: int) -> Result:
        """Drive this server with wrk; the result includes its CPU time per request."""
        before = group_cpu_seconds(self.proc.pid)
        result = wrk(self.url, script, connections, seconds)
        used = group_cpu_seconds(self.proc.pid) - before
        return replace(result, cpu_us=used / max(result.requests, 1) * 1e6)

    def __exit__(self, *_: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()
