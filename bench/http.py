"""Throughput and tail latency of Atrium's keyed reads against a minimal endpoint, same run.

Three reads, each with its key (the cached template read with a ``templates:read`` key, the
certificates reads with an ``admin`` key, as an administrator's tooling calls them):

* ``GET /templates/{templateid}`` — 1,000 templates, random ids;
* ``GET /users/{user_id}`` — 1,000 users, random ids;
* ``GET /users/{user_id}/certificates`` — a page of 20 certificates of a random user.

Each runs against Atrium exactly as shipped (``atrium serve``: gunicorn + uvicorn workers, key
check, rate limiter, cache, metrics, JSON access log on), against the same Atrium with the
access log off (``ATRIUM_LOG_LEVEL=WARNING``, to price the log), and against the minimal
FastAPI + asyncpg + orjson endpoint doing the same queries (``bench/_baselines.py``). Every
server gets the same number of workers; ``wrk -t1`` drives each over loopback after a warm-up
(every path once, so a cache holds them all, then random requests) and reports requests/s with
p50, p99 and p99.9 from its full latency histogram. Rounds are interleaved; medians are printed
with the spread (min-max) over rounds, ratios are taken within a round.

A cold start is measured too: Atrium started with an empty cache and driven at once, the first
5 s and the next 5 s reported separately.

Goals (issue 13), per worker count, checked and printed as met / NOT met:

* warm p99 of Atrium (log on) <= the minimal endpoint's p99, on templates and users;
* Atrium >= 1.5x the minimal endpoint's throughput on the cached template read;
* a cold start reaches that p99 within 5 s (p99 of seconds 5-10 <= the minimal warm p99);
* the JSON access log costs <= 10 % of throughput (log on vs off, same round).

    ATRIUM_BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    ATRIUM_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 \\
    python -m bench.http [--workers 1,2] [--seconds 10] [--rounds 2] [--only templates,users]

It creates (and drops) its own database and only touches Redis keys under its own prefix.
Exit status 0 when every goal is met.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from bench._http import (
    ROOT,
    Dataset,
    Result,
    Server,
    cleanup,
    forget_cache,
    prepare,
    warm,
    wrk,
    wrk_script,
)

ATRIUM = "atrium"
ATRIUM_QUIET = "atrium, access log off"
MINIMAL = "minimal FastAPI + asyncpg + orjson"
COLD_EARLY = "atrium cold start, 0-5 s"
COLD_LATE = "atrium cold start, 5-10 s"
COLD_WINDOW = 5


@dataclass(frozen=True)
class Read:
    """One benchmarked endpoint: its paths, its key, and the goals that apply to it."""

    title: str
    paths: Callable[[Dataset], list[str]]
    key: Callable[[Dataset], str]
    p99_goal: bool
    throughput_goal: float | None = None


READS = {
    "templates": Read(
        "GET /templates/{templateid}",
        lambda d: [f"/templates/{i}" for i in d.template_ids],
        lambda d: d.templates_key,
        p99_goal=True,
        throughput_goal=1.5,
    ),
    "users": Read(
        "GET /users/{user_id}",
        lambda d: [f"/users/{i}" for i in d.user_ids],
        lambda d: d.admin_key,
        p99_goal=True,
    ),
    "certificates": Read(
        "GET /users/{user_id}/certificates",
        lambda d: [f"/users/{i}/certificates" for i in random.Random(7).sample(d.user_ids, 100)],
        lambda d: d.admin_key,
        p99_goal=False,
    ),
}


def environments(data: Dataset, workers: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), base.get("PYTHONPATH", "")])
    py = sys.executable
    atrium_env = {
        **base,
        # As deployed: production settings, PostgreSQL + Redis, secrets from the environment.
        "ATRIUM_ENV": "production",
        "ATRIUM_DATABASE_URL": data.dsn,
        "ATRIUM_REDIS_URL": data.redis_url,
        "ATRIUM_REDIS_PREFIX": data.prefix,
        "ATRIUM_ENCRYPTION_KEY": "bench:" + base64.b64encode(os.urandom(32)).decode(),
        "ATRIUM_TOKEN_SECRET": base64.b64encode(os.urandom(32)).decode(),
        "ATRIUM_LOG_LEVEL": "INFO",
    }
    atrium = [py, "-m", "atrium.cli", "serve", "--port", "{port}", "--workers", str(workers)]
    minimal = [py, "-m", "uvicorn", "--factory", "--host", "127.0.0.1", "--port", "{port}"]
    minimal += ["--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    minimal.append("bench._baselines:asyncpg_app")
    return {
        ATRIUM: (atrium, atrium_env),
        ATRIUM_QUIET: (atrium, {**atrium_env, "ATRIUM_LOG_LEVEL": "WARNING"}),
        MINIMAL: (minimal, {**base, "BENCH_DSN": data.dsn}),
    }


def read_script(directory: Path, data: Dataset, name: str, *, in_order: bool = False) -> Path:
    """The wrk script of read ``name`` (its paths, its key)."""
    read = READS[name]
    headers = {"X-API-KEY": read.key(data)}
    return wrk_script(directory, name, read.paths(data), headers, in_order=in_order)


def warm_up(url: str, directory: Path, data: Dataset, name: str, connections: int) -> None:
    """Every path of read ``name`` once (so the cache holds them all), whatever the speed."""
    in_order = read_script(directory, data, name, in_order=True)
    warm(url, in_order, len(READS[name].paths(data)), connections)


Runs = dict[tuple[int, str, str], list[Result]]  # (workers, read, server) -> one per round


def _measure(
    data: Dataset, reads: list[str], workers: int, args: argparse.Namespace, tmp: Path, runs: Runs
) -> None:
    """One round at one worker count: every server warm, then Atrium from cold."""
    envs = environments(data, workers)
    scripts = {name: read_script(tmp, data, name) for name in reads}
    for server in (ATRIUM, ATRIUM_QUIET, MINIMAL):
        command, env = envs[server]
        with Server(command, env, tmp / "servers.log") as s:
            for name in reads:
                warm_up(s.url, tmp, data, name, args.connections)
                wrk(s.url, scripts[name], args.connections, args.warmup)
                result = s.measure(scripts[name], args.connections, args.seconds)
                runs.setdefault((workers, name, server), []).append(result)
                _progress(workers, name, server, result)
    command, env = envs[ATRIUM]
    for name in reads:
        asyncio.run(forget_cache(data))
        with Server(command, env, tmp / "servers.log") as s:
            for label in (COLD_EARLY, COLD_LATE):
                result = s.measure(scripts[name], args.connections, COLD_WINDOW)
                runs.setdefault((workers, name, label), []).append(result)
                _progress(workers, name, label, result)


def _progress(workers: int, read: str, server: str, r: Result) -> None:
    print(
        f"  {workers}w {read:<12} {server:<36} {r.rps:>8,.0f} req/s  p50 {r.p50:6.2f}  "
        f"p99 {r.p99:7.2f}  p99.9 {r.p999:7.2f} ms  errors {r.errors}  CPU {r.cpu_us:.0f} µs/req",
        file=sys.stderr,
        flush=True,
    )


def _spread(values: list[float], fmt: str) -> str:
    mid = format(median(values), fmt)
    if len(values) < 2:
        return mid
    return f"{mid} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _report(
    runs: Runs, reads: list[str], workers_list: list[int], args: argparse.Namespace
) -> bool:
    """Print the tables and the goals; True when every goal is met."""
    goals: list[tuple[str, bool]] = []
    servers = (ATRIUM, ATRIUM_QUIET, MINIMAL, COLD_EARLY, COLD_LATE)
    for workers in workers_list:
        for name in reads:
            read = READS[name]
            print(
                f"\n{read.title}: {workers} worker(s) each, wrk -t1 -c{args.connections}, "
                f"{args.seconds:g} s after {args.warmup:g} s warm-up, {args.rounds} round(s): "
                f"median (min-max)\n"
            )
            print(
                f"| {'server':<36} | {'req/s':>22} | {'p50 ms':>6} | {'p99 ms':>22} | "
                f"{'p99.9 ms':>8} | {'errors':>6} | {'CPU µs/req':>10} |"
            )
            print(f"|{'-' * 38}|{'-' * 24}|{'-' * 8}|{'-' * 24}|{'-' * 10}|{'-' * 8}|{'-' * 12}|")
            for server in servers:
                results = runs[(workers, name, server)]
                print(
                    f"| {server:<36} | {_spread([r.rps for r in results], ',.0f'):>22} | "
                    f"{median(r.p50 for r in results):>6.2f} | "
                    f"{_spread([r.p99 for r in results], '.2f'):>22} | "
                    f"{median(r.p999 for r in results):>8.2f} | "
                    f"{sum(r.errors for r in results):>6} | "
                    f"{median(r.cpu_us for r in results):>10.0f} |"
                )
            on, off, base = (runs[(workers, name, s)] for s in (ATRIUM, ATRIUM_QUIET, MINIMAL))
            late = runs[(workers, name, COLD_LATE)]
            errors = sum(r.errors for s in servers for r in runs[(workers, name, s)])
            speed = median(a.rps / b.rps for a, b in zip(on, base, strict=True))
            log_cost = median(1 - a.rps / b.rps for a, b in zip(on, off, strict=True))
            target = median(r.p99 for r in base)
            print(
                f"\natrium / minimal throughput: {speed:.2f}x; access log cost: {log_cost:.1%} "
                f"of throughput (log on vs off, same round)"
            )
            where = f"{name}, {workers}w"
            goals.append((f"{where}: no failed request", errors == 0))
            if read.p99_goal:
                ours = median(r.p99 for r in on)
                goals.append(
                    (
                        f"{where}: warm p99 {ours:.2f} ms <= minimal p99 {target:.2f} ms",
                        ours <= target,
                    )
                )
                cold = median(r.p99 for r in late)
                goals.append(
                    (
                        f"{where}: cold start p99 at 5-10 s {cold:.2f} ms <= {target:.2f} ms",
                        cold <= target,
                    )
                )
            if read.throughput_goal is not None:
                goals.append(
                    (
                        f"{where}: throughput {speed:.2f}x minimal >= {read.throughput_goal}x",
                        speed >= read.throughput_goal,
                    )
                )
            goals.append((f"{where}: access log costs {log_cost:.1%} <= 10 %", log_cost <= 0.10))
    print("\nGoals:")
    for text, met in goals:
        print(f"  {'met    ' if met else 'NOT met'}  {text}")
    return all(met for _, met in goals)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the tables and goals (0 when every goal is met)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--only", default=",".join(READS), help="comma-separated reads")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.http needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    reads = [r for r in args.only.split(",") if r]
    unknown = set(reads) - set(READS)
    if unknown:
        parser.error(f"unknown read(s) {sorted(unknown)}; have {list(READS)}")
    workers_list = [int(w) for w in args.workers.split(",")]
    admin_url = os.environ.get(
        "ATRIUM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("ATRIUM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    data = asyncio.run(prepare(admin_url, redis_url, templates=1000, users=1000, certificates=20))
    runs: Runs = {}
    try:
        with tempfile.TemporaryDirectory(prefix="atrium-bench-") as tmp:
            for round_no in range(args.rounds):
                for workers in workers_list:
                    print(f"round {round_no + 1}, {workers} worker(s)", file=sys.stderr)
                    _measure(data, reads, workers, args, Path(tmp), runs)
    finally:
        asyncio.run(cleanup(data))
    print(f"\n{os.cpu_count()} CPUs shared by wrk and the servers")
    return 0 if _report(runs, reads, workers_list, args) else 1


if __name__ == "__main__":
    sys.exit(main())
