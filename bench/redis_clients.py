"""Which Redis client should carry the per-request script? End-to-end, same run.

Atrium serves ``GET /templates/{templateid}`` (cached: one Redis script call per request, for
the key check, the rate limit and the cache read together) with that call made by each
candidate in turn (``bench/_redis_clients.py``): what Atrium ships ("atrium": redis-py
pipelines batching the calls of each event-loop iteration), redis-py's client API call by
call with its pure-Python parser and with hiredis, coredis and valkey-glide when installed.
``wrk -t1 -c32`` drives each after a warm-up pass; rounds are interleaved, each starting with
another candidate; throughput ratios are taken against the first candidate within each round.
Everything else is as shipped.

The rule (issue 13): a hand-written client stays only if every library is more than 15 %
slower end to end.

    python -m bench.redis_clients [--seconds 10] [--rounds 3]

One worker, switched between the candidates (``POST /__bench/redis-client/{name}``, a route of
the benchmark's own app factory only), so the rounds interleave without restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from statistics import median
from urllib.parse import quote

from bench._http import Result, Server, cleanup, prepare, wrk
from bench._redis_clients import SWITCH
from bench.http import environments, read_script, warm_up

CANDIDATES = {
    "atrium": "atrium",
    "redis-py+hiredis": "hiredis",
    "redis-py": "redis",
    "coredis": "coredis",
    "valkey-glide": "glide",
}
FACTORY = "bench._redis_clients:create_app"


def _switch(url: str, name: str) -> None:
    request = urllib.request.Request(f"{url}{SWITCH}{quote(name)}", method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def main(argv: list[str] | None = None) -> int:
    """Measure every installed candidate and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.redis_clients needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    names = [n for n, module in CANDIDATES.items() if importlib.util.find_spec(module)]
    names.sort(key=lambda n: n != "atrium")
    for name in CANDIDATES.keys() - set(names):
        print(f"not installed here, not measured: {name}")
    admin_url = os.environ.get(
        "ATRIUM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("ATRIUM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    data = asyncio.run(prepare(admin_url, redis_url, templates=1000, users=1, certificates=1))
    runs: dict[str, list[Result]] = {name: [] for name in names}
    try:
        with tempfile.TemporaryDirectory(prefix="atrium-bench-") as tmp:
            script = read_script(Path(tmp), data, "templates")
            command, env = environments(data, 1)["atrium"]
            with Server([*command, "--app", FACTORY], env, Path(tmp) / "server.log") as s:
                for round_no in range(args.rounds):
                    # Another candidate goes first each round.
                    shift = round_no % len(names)
                    for name in names[shift:] + names[:shift]:
                        _switch(s.url, name)
                        warm_up(s.url, Path(tmp), data, "templates", args.connections)
                        wrk(s.url, script, args.connections, args.warmup)
                        result = s.measure(script, args.connections, args.seconds)
                        runs[name].append(result)
                        print(
                            f"round {round_no + 1}: {name:<30} {result.rps:>8,.0f} req/s  "
                            f"p99 {result.p99:6.2f} ms  CPU {result.cpu_us:5.0f} µs/req  "
                            f"errors {result.errors}",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        asyncio.run(cleanup(data))
    base = names[0]
    print(
        f"\nGET /templates/{{templateid}} (cached), Atrium with one worker, "
        f"wrk -t1 -c{args.connections}, {args.seconds} s x {args.rounds} rounds: "
        f"median (min-max); ratio to {base} within each round\n"
    )
    print(
        f"| {'client':<20} | {'req/s':>22} | {'ratio':>5} | {'p99 ms':>7} | "
        f"{'CPU µs/req':>10} | {'errors':>6} |"
    )
    print(f"|{'-' * 22}|{'-' * 24}|{'-' * 7}|{'-' * 9}|{'-' * 12}|{'-' * 8}|")
    for name in names:
        rps = [r.rps for r in runs[name]]
        ratio = median(a.rps / b.rps for a, b in zip(runs[name], runs[base], strict=True))
        spread = f"{median(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"
        print(
            f"| {name:<30} | {spread:>22} | {ratio:>5.2f} | "
            f"{median(r.p99 for r in runs[name]):>7.2f} | "
            f"{median(r.cpu_us for r in runs[name]):>10.0f} | "
            f"{sum(r.errors for r in runs[name]):>6} |"
        )
    return 0 if all(r.errors == 0 for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
