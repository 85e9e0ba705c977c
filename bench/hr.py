"""HR data benchmarks on PostgreSQL, each against a baseline measured in the same run.

    python -m bench.hr [--rows 1000000] [--rounds 1] [--clients 8] [--workers 2]

Needs PostgreSQL (``ATRIUM_BENCH_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``) and ``psql``/``pg_dump``/``pg_restore`` on
PATH. It creates its own databases and drops them at the end; it starts its own
``atrium serve`` on a free loopback port. Measured:

* CSV ingest of a generated ``hired_employees.csv`` through ``POST /hr/hired_employees/csv``
  (and through ``atrium hr load``) vs ``psql \\copy`` of the same file into an identical table
  (same columns, primary key and foreign keys): goal ≥ 1.0x psql's speed. The server connects
  as the superuser that owns the bench database, so it may skip the per-row foreign-key
  triggers after checking and locking the references itself; ``atrium hr load`` also runs as
  a plain role that may not (the triggers then run as in ``psql``): goal ≥ 0.9x;
* peak RSS of the ingesting process, sampled from ``/proc`` (server) and ``wait4`` (CLI):
  goal flat, < 200 MB;
* the batch API, 1000 rows per request over concurrent keep-alive connections: goal ≥ 100k
  rows/s, or ≥ 0.9x the database's own ceiling, ``psql \\copy`` of the same rows into the
  same table with its foreign keys;
* ``POST /hr/backups`` (Avro) vs ``pg_dump -Fc`` of the same three tables: goal ≤ 1.5x;
* ``POST /hr/backups/{id}/restore`` vs ``pg_restore`` of that dump into an empty database.

Rounds interleave ours and the baseline; the best round of each is reported (the machine
may be shared, and the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import make_url

from bench._hr_data import write_all

ADMIN_URL = os.environ.get(
    "ATRIUM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MB = 1024 * 1024


def _db_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn workers are children of the supervisor)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.extend(_family(int(child)))
    return found


class RssSampler:
    """Polls the VmRSS of a process tree from /proc while a block runs; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.before_kb = max(_rss_kb(p) for p in _family(pid))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max([self.peak_kb] + [_rss_kb(p) for p in _family(self.pid)])
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def server(env: dict[str, str], workers: int, log: Path) -> Iterator[tuple[str, int]]:
    """``atrium serve`` on a free port; yields (base URL, supervisor pid)."""
    port = _free_port()
    command = [sys.executable, "-m", "atrium.cli", "serve", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def create_key(env: dict[str, str]) -> str:
    """An API key with the HR scopes and a rate limit the benchmark cannot reach: the key
    check and the limiter stay on the measured path, as in production."""
    return subprocess.run(
        [sys.executable, "-m", "atrium.cli", "apikeys", "create", "--owner", "bench",
         "--scopes", "hr:read,hr:write", "--rate-limit", "1000000000"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


async def wait_for_key(url: str, key: str) -> None:
    """Servers reload keys made by another process within a second or so; wait for that."""
    async with httpx.AsyncClient(headers={"X-API-KEY": key}) as client:
        for _ in range(100):
            if (await client.get(f"{url}/hr/jobs", params={"limit": 1})).status_code == 200:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("the server never accepted the benchmark's API key")


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run a command; (wall seconds, peak RSS in kB of that very process, via wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        raise RuntimeError(f"{command[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss


async def _file_chunks(path: Path, size: int = MB) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


async def http_ingest(url: str, path: Path, key: str) -> tuple[float, dict[str, Any]]:
    """Stream a CSV file to the API; (seconds, summary)."""
    async with httpx.AsyncClient(timeout=3600, headers={"X-API-KEY": key}) as client:
        started = time.perf_counter()
        response = await client.post(
            f"{url}/hr/hired_employees/csv",
            content=_file_chunks(path),
            headers={"content-type": "text/csv"},
        )
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    summary: dict[str, Any] = response.json()
    return elapsed, summary


def batch_bodies(path: Path, rows: int, per_request: int = 1000) -> list[bytes]:
    """The CSV's rows as JSON batches, encoded before the clock starts."""
    bodies, batch = [], []
    with path.open(encoding="utf-8") as handle:
        for count, line in enumerate(handle):
            if count >= rows:
                break
            i, name, when, dep, job = line.rstrip("\n").split(",")
            batch.append(
                {"id": int(i), "name": name, "datetime": when,
                 "department_id": int(dep), "job_id": int(job)}
            )  # fmt: skip
            if len(batch) == per_request:
                bodies.append(orjson.dumps(batch))
                batch = []
    if batch:
        bodies.append(orjson.dumps(batch))
    return bodies


async def _post_raw(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> dict[str, Any]:
    """One keep-alive HTTP/1.1 POST on an open connection; the JSON answer (200 only)."""
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    answer = await reader.readexactly(length)
    if b" 200 " not in status_line:
        raise RuntimeError(f"{status_line!r}: {answer[:500]!r}")
    result: dict[str, Any] = orjson.loads(answer)
    return result


async def batch_api(url: str, bodies: list[bytes], clients: int, key: str) -> tuple[float, int]:
    """POST every body over ``clients`` concurrent keep-alive connections; (seconds, rows
    inserted). The client is a few lines of asyncio rather than httpx: on a 2-core machine
    httpx's ~1.8 ms of CPU per request would be taken from the server being measured."""
    host, _, port = url.removeprefix("http://").partition(":")
    head = (
        f"POST /hr/hired_employees/batch HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"X-API-KEY: {key}\r\nContent-Type: application/json\r\nContent-Length: "
    ).encode()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    inserted = 0
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(clients)]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal inserted
        while not queue.empty():
            answer = await _post_raw(reader, writer, head, queue.get_nowait())
            inserted += answer["inserted"]

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(r, w) for r, w in connections))
        return time.perf_counter() - started, inserted
    finally:
        for _, writer in connections:
            writer.close()


async def api_call(url: str, path: str, key: str) -> tuple[float, dict[str, Any]]:
    """POST with no body; (seconds, JSON answer)."""
    async with httpx.AsyncClient(timeout=3600, headers={"X-API-KEY": key}) as client:
        started = time.perf_counter()
        response = await client.post(url + path)
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return elapsed, body


async def sql(database: str, *statements: str) -> None:
    """Run statements on one of the bench's databases."""
    connection = await asyncpg.connect(_db_url(database))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


COPY_TABLE = """
CREATE TABLE bench_copy (LIKE hired_employees INCLUDING ALL);
ALTER TABLE bench_copy
  ADD FOREIGN KEY (department_id) REFERENCES departments (id),
  ADD FOREIGN KEY (job_id) REFERENCES jobs (id);
"""


def best(values: list[float]) -> float:
    """The least disturbed round."""
    return min(values)


def report(rows: list[tuple[str, str, str, str, str]]) -> None:
    """Print the results table."""
    header = ("measure", "ours", "baseline", "ratio", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


async def run(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    database, restore_db = f"atrium_bench_{run}", f"atrium_bench_restore_{run}"
    plain_role = f"atrium_bench_plain_{run}"
    tools = {name: shutil.which(name) for name in ("psql", "pg_dump", "pg_restore")}
    missing = [name for name, found in tools.items() if not found]
    if missing:
        raise SystemExit(f"needs {', '.join(missing)} on PATH (Debian: postgresql-client)")
    work = Path(tempfile.mkdtemp(prefix="atrium-bench-"))
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        for name in (database, restore_db):
            await admin.execute(f'CREATE DATABASE "{name}"')
        print(f"generating {args.rows:,} rows in {work} …", flush=True)
        write_all(work / "data", args.rows)
        csv = work / "data" / "hired_employees.csv"
        print(f"hired_employees.csv: {csv.stat().st_size / MB:.1f} MiB", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
        env.update(
            ATRIUM_DATABASE_URL=_db_url(database),
            ATRIUM_DATA_DIR=str(work / "atrium"),
            ATRIUM_AUTO_MIGRATE="true",
            ATRIUM_LOG_LEVEL="WARNING",
            ATRIUM_ENV="test",
        )
        results: list[tuple[str, str, str, str, str]] = []
        with server(env, args.workers, work / "server.log") as (url, pid):
            key = create_key(env)
            await wait_for_key(url, key)
            async with httpx.AsyncClient(timeout=60, headers={"X-API-KEY": key}) as client:
                for table in ("departments", "jobs"):
                    data = (work / "data" / f"{table}.csv").read_bytes()
                    answer = await client.post(
                        f"{url}/hr/{table}/csv", content=data, headers={"content-type": "text/csv"}
                    )
                    answer.raise_for_status()
            await sql(database, COPY_TABLE)
            psql = [tools["psql"] or "psql", _db_url(database), "-q", "-v", "ON_ERROR_STOP=1"]
            # A role that may not skip foreign-key triggers (no superuser, no grant on
            # session_replication_role): how most applications connect.
            await sql(
                database,
                f"CREATE ROLE {plain_role} LOGIN",
                f"GRANT USAGE ON SCHEMA public TO {plain_role}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                f"TO {plain_role}",
            )
            plain_env = dict(env, ATRIUM_AUTO_MIGRATE="false")
            plain_env["ATRIUM_DATABASE_URL"] = (
                make_url(_db_url(database))
                .set(username=plain_role, password=None)
                .render_as_string(hide_password=False)
            )
            batch_rows = min(args.rows, args.batch_rows)
            batch_csv = work / "data" / "batch.csv"
            with csv.open("rb") as source, batch_csv.open("wb") as target:
                for _, line in zip(range(batch_rows), source, strict=False):
                    target.write(line)
            bodies = batch_bodies(csv, batch_rows)

            # --- CSV ingest vs psql \copy ----------------------------------------------
            ours, theirs, cli_runs, plain_runs = [], [], [], []
            batches, copies = [], []
            peak_kb = before_kb = cli_rss_kb = 0
            for round_ in range(args.rounds):
                print(f"ingest round {round_ + 1}/{args.rounds} …", flush=True)
                await sql(database, "TRUNCATE bench_copy")
                seconds, _ = timed([*psql, "-c", f"\\copy bench_copy FROM '{csv}' CSV"])
                theirs.append(seconds)
                await sql(database, "TRUNCATE hired_employees")
                with RssSampler(pid) as sampler:
                    seconds, summary = await http_ingest(url, csv, key)
                assert summary["inserted"] == args.rows, summary
                ours.append(seconds)
                peak_kb, before_kb = max(peak_kb, sampler.peak_kb), sampler.before_kb
                await sql(database, "TRUNCATE hired_employees")
                seconds, rss = timed(
                    [sys.executable, "-m", "atrium.cli", "hr", "load", str(csv)], env=env
                )
                cli_runs.append(seconds)
                cli_rss_kb = max(cli_rss_kb, rss)
                await sql(database, "TRUNCATE hired_employees")
                seconds, _ = timed(
                    [sys.executable, "-m", "atrium.cli", "hr", "load", str(csv)], env=plain_env
                )
                plain_runs.append(seconds)

                print(f"batch round {round_ + 1}/{args.rounds}: {batch_rows:,} rows, "
                      f"{args.clients} clients …", flush=True)  # fmt: skip
                await sql(database, "TRUNCATE hired_employees, bench_copy")
                seconds, inserted = await batch_api(url, bodies, args.clients, key)
                assert inserted == batch_rows, inserted
                batches.append(seconds)
                seconds, _ = timed([*psql, "-c", f"\\copy bench_copy FROM '{batch_csv}' CSV"])
                copies.append(seconds)
            rate = args.rows / best(ours)
            copy = f"{best(theirs):.2f} psql \\copy"
            results += [
                ("CSV ingest, HTTP (s)", f"{best(ours):.2f}", copy,
                 f"{best(theirs) / best(ours):.2f}x speed", ">= 1.0x"),
                ("CSV ingest, CLI (s)", f"{best(cli_runs):.2f}", copy,
                 f"{best(theirs) / best(cli_runs):.2f}x speed", ">= 1.0x"),
                ("  CLI, plain role (s)", f"{best(plain_runs):.2f}", copy,
                 f"{best(theirs) / best(plain_runs):.2f}x speed", ">= 0.9x"),
                ("  rows/s (HTTP)", f"{rate:,.0f}", "", "", ""),
                ("peak RSS, server (MB)", f"{peak_kb / 1024:.0f}",
                 f"{before_kb / 1024:.0f} before", "", "flat, < 200"),
                ("peak RSS, CLI (MB)", f"{cli_rss_kb / 1024:.0f}", "", "", "flat, < 200"),
                ("batch API (rows/s)", f"{batch_rows / best(batches):,.0f}",
                 f"{batch_rows / best(copies):,.0f} psql \\copy",
                 f"{best(copies) / best(batches):.2f}x", ">= 100,000 or 0.9x"),
            ]  # fmt: skip

            # --- backup vs pg_dump, restore vs pg_restore ---------------------------------
            await sql(database, "TRUNCATE hired_employees")
            async with httpx.AsyncClient(timeout=3600, headers={"X-API-KEY": key}) as client:
                answer = await client.post(
                    f"{url}/hr/hired_employees/csv",
                    content=_file_chunks(csv),
                    headers={"content-type": "text/csv"},
                )
                answer.raise_for_status()
            await sql(database, "DROP TABLE bench_copy", "VACUUM ANALYZE")
            dump = work / "hr.dump"
            backups, dumps, restores, pg_restores = [], [], [], []
            manifest: dict[str, Any] = {}
            for round_ in range(args.rounds):
                print(f"backup/restore round {round_ + 1}/{args.rounds} …", flush=True)
                seconds, _ = timed(
                    [tools["pg_dump"] or "pg_dump", "-Fc", "-t", "departments", "-t", "jobs",
                     "-t", "hired_employees", "-f", str(dump), _db_url(database)]
                )  # fmt: skip
                dumps.append(seconds)
                seconds, manifest = await api_call(url, "/hr/backups", key)
                backups.append(seconds)
                await sql(restore_db, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
                seconds, _ = timed(
                    [tools["pg_restore"] or "pg_restore", "-d", _db_url(restore_db), str(dump)]
                )
                pg_restores.append(seconds)
                seconds, _ = await api_call(url, f"/hr/backups/{manifest['id']}/restore", key)
                restores.append(seconds)
            avro_mb = sum(t["bytes"] for t in manifest["tables"].values()) / MB
            results += [
                ("backup to Avro (s)", f"{best(backups):.2f}", f"{best(dumps):.2f} pg_dump -Fc",
                 f"{best(backups) / best(dumps):.2f}x time", "<= 1.5x"),
                ("  size (MiB)", f"{avro_mb:.1f}", f"{dump.stat().st_size / MB:.1f}", "", ""),
                ("restore (s)", f"{best(restores):.2f}", f"{best(pg_restores):.2f} pg_restore",
                 f"{best(restores) / best(pg_restores):.2f}x time", "(reported)"),
            ]  # fmt: skip
        report(results)
        print(
            f"\n{args.rows:,} rows, {args.rounds} round(s), best of each; server --workers "
            f"{args.workers}; PostgreSQL at {ADMIN_URL.rpartition('@')[2]}"
        )
    finally:
        for name in (database, restore_db):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE IF EXISTS {plain_role}")
        await admin.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run (``python -m bench.hr``, or ``python -m bench hr``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.hr", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="hired_employees rows")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (best kept)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent batch clients")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument(
        "--batch-rows", type=int, default=1_000_000, help="rows sent through the batch API"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
