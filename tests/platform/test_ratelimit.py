"""Rate limiting: GCRA semantics, headers, buckets, many processes on one Redis, Redis down."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from atrium.app import create_app
from atrium.platform.apikeys import KeyStore
from atrium.platform.ratelimit import Decision, MemoryLimiter, RedisHealth, RedisLimiter
from atrium.settings import Settings
from tests.support import free_port, run_server, settings_env

PROBLEM = "application/problem+json"


def _rejections(bucket: str) -> float:
    value = REGISTRY.get_sample_value("atrium_rate_limit_rejections_total", {"bucket": bucket})
    return value or 0.0


def _backend_errors() -> float:
    return REGISTRY.get_sample_value("atrium_rate_limit_backend_errors_total") or 0.0


@asynccontextmanager
async def _client(
    app: FastAPI, key: str | None = None, client: tuple[str, int] = ("127.0.0.1", 1234)
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-API-KEY": key} if key else {}
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        yield c


@asynccontextmanager
async def _app(settings: Settings, **changes: Any) -> AsyncIterator[FastAPI]:
    app = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        yield app


# --- the algorithm ----------------------------------------------------------------------------


def test_gcra_burst_is_exactly_the_limit_then_refills_smoothly() -> None:
    limiter = MemoryLimiter(period=60)
    decisions = [limiter.check("b", 10, now=1000.0) for _ in range(12)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    refused = decisions[10]
    assert refused.retry_after == pytest.approx(6.0)  # one interval: 60 s / 10
    assert refused.reset_after == pytest.approx(60.0)
    assert not limiter.check("b", 10, now=1005.9).allowed
    assert limiter.check("b", 10, now=1006.0).allowed  # one request back after one interval
    assert not limiter.check("b", 10, now=1006.0).allowed
    full = limiter.check("b", 10, now=1200.0)  # idle for long: a full burst again
    assert (full.allowed, full.remaining) == (True, 9)
    assert limiter.check("other", 10, now=1006.0).remaining == 9  # buckets are independent


def test_gcra_with_a_limit_that_does_not_divide_the_period() -> None:
    limiter = MemoryLimiter(period=60)
    allowed = [limiter.check("b", 7, now=5.0).allowed for _ in range(9)]
    assert allowed.count(True) == 7


def test_headers_of_a_decision() -> None:
    ok = dict(Decision(True, 600, 599, 0.1).headers())
    assert ok == {
        b"ratelimit-limit": b"600",
        b"ratelimit-remaining": b"599",
        b"ratelimit-reset": b"1",
    }
    refused = dict(Decision(False, 5, 0, 60.0, 11.2).headers())
    assert refused[b"retry-after"] == b"12"
    assert refused[b"ratelimit-remaining"] == b"0"


def test_memory_limiter_stays_bounded() -> None:
    limiter = MemoryLimiter(period=60, max_buckets=100)
    for i in range(1000):
        limiter.check(f"ip:{i}", 5, now=float(i))
    assert len(limiter._tat) <= 100


@pytest.mark.postgres
async def test_redis_gcra_script(clean: FastAPI) -> None:
    limiter = RedisLimiter(clean.state.redis, clean.state.settings.redis_prefix, RedisHealth(True))
    decisions = [await limiter.hit("unit", 5) for _ in range(7)]
    assert [d is not None and d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5] if d] == [4, 3, 2, 1, 0]
    refused = decisions[5]
    assert refused is not None
    assert 11.0 < refused.retry_after <= 12.0
    assert 59.0 < refused.reset_after <= 60.0


# --- over HTTP --------------------------------------------------------------------------------


async def test_per_key_limit_with_headers_and_429(clean: FastAPI) -> None:
    store: KeyStore = clean.state.api_keys
    key, _ = await store.create("limited", ("templates:read",), rate_limit=3)
    before = _rejections("key")
    async with _client(clean, key) as c:
        responses = [await c.get("/templates") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r.headers["ratelimit-limit"] == "3" for r in responses)
    refused = responses[3]
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["type"].endswith("/rate-limited")
    assert 19 <= int(refused.headers["retry-after"]) <= 20  # 60 s / 3
    assert 59 <= int(refused.headers["ratelimit-reset"]) <= 60
    assert _rejections("key") == before + 1
    # Another key has its own bucket.
    other, _ = await store.create("other", ("templates:read",))
    async with _client(clean, other) as c:
        response = await c.get("/templates")
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == str(clean.state.settings.rate_limit)


async def test_anonymous_callers_are_limited_per_address(
    settings: Settings, clean: FastAPI
) -> None:
    async with _app(settings, rate_limit=2) as app:
        async with _client(app, client=("10.0.0.1", 1)) as c:
            statuses = [(await c.get("/templates")).status_code for _ in range(3)]
            assert statuses == [401, 401, 429]  # counted even though they are refused
            assert (await c.get("/livez")).status_code == 200  # probes are never limited
        async with _client(app, client=("10.0.0.2", 1)) as c:
            assert (await c.get("/templates")).status_code == 401
            # X-Forwarded-For from an untrusted peer is ignored: same bucket as before.
            for forwarded in ("1.1.1.1", "2.2.2.2"):
                response = await c.get("/templates", headers={"X-Forwarded-For": forwarded})
            assert response.status_code == 429


async def test_forwarded_for_is_believed_from_trusted_proxies(
    settings: Settings, clean: FastAPI
) -> None:
    async with (
        _app(settings, rate_limit=1, trusted_proxies=["10.9.0.0/16"]) as app,
        _client(app, client=("10.9.0.5", 1)) as proxy,
    ):
        for client_ip in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
            headers = {"X-Forwarded-For": f"{client_ip}, 10.9.0.7"}
            assert (await proxy.get("/templates", headers=headers)).status_code == 401
        again = await proxy.get("/templates", headers={"X-Forwarded-For": "1.1.1.1"})
        assert again.status_code == 429
        # A client-written X-Forwarded-For behind the proxy cannot pick a fresh address.
        spoofed = await proxy.get("/templates", headers={"X-Forwarded-For": "9.9.9.9, 2.2.2.2"})
        assert spoofed.status_code == 429


async def test_registration_and_login_have_their_own_address_limit(
    settings: Settings, clean: FastAPI, admin_api_key: str
) -> None:
    before = _rejections("auth")
    async with _app(settings, auth_rate_limit=2) as app:
        async with _client(app, client=("10.0.0.3", 1)) as c:
            statuses = [(await c.post("/users", json={})).status_code for _ in range(2)]
            assert 429 not in statuses
            assert (await c.post("/auth/token", data={})).status_code == 429
            # The address's general bucket is separate.
            assert (await c.get("/templates")).status_code == 401
        async with _client(app, admin_api_key, client=("10.0.0.3", 1)) as c:
            # With a valid key, the key's own limit applies instead.
            assert (await c.post("/users", json={})).status_code != 429
    assert _rejections("auth") == before + 1


# --- many processes, one Redis ----------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
async def test_limit_holds_across_server_processes(
    clean: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    """Three processes on one Redis: a burst from one key gets exactly the limit through."""
    store: KeyStore = clean.state.api_keys
    key, _ = await store.create("burst", ("templates:read",), rate_limit=10)
    env = settings_env(settings)
    with (
        run_server(env, tmp_path / "a") as a,
        run_server(env, tmp_path / "b") as b,
        run_server(env, tmp_path / "c") as c,
    ):
        servers = [a, b, c]
        async with httpx.AsyncClient(headers={"X-API-KEY": key}, timeout=10) as http:
            responses = await asyncio.gather(
                *(http.get(f"{servers[i % 3].url}/templates") for i in range(45))
            )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 35
    # One shared bucket: the admitted requests saw every remaining count exactly once.
    remaining = sorted(
        int(r.headers["ratelimit-remaining"]) for r in responses if r.status_code == 200
    )
    assert remaining == list(range(10))


# --- Redis going away -------------------------------------------------------------------------


@contextmanager
def _own_redis(tmp_path: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A private redis-server (append-only file, so a restart keeps the keys)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        client = redis.Redis(port=port, password=password)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


async def _until(predicate: Any, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_redis_down_fails_open_and_recovers(
    settings: Settings, clean: FastAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with _own_redis(tmp_path, port) as redis_proc:
        async with _app(settings, redis_url=url, redis_prefix="down-test:") as app:
            store: KeyStore = app.state.api_keys
            key, _ = await store.create("ops", ("templates:read",), rate_limit=3)
            async with _client(app, key) as c:
                assert (await c.get("/templates")).headers["ratelimit-remaining"] == "2"
                redis_proc.send_signal(signal.SIGKILL)
                redis_proc.wait()
                errors = _backend_errors()
                with caplog.at_level(logging.WARNING, logger="atrium.ratelimit"):
                    statuses = [(await c.get("/templates")).status_code for _ in range(6)]
                # Keeps serving (the key is known from the snapshot), no limit while down.
                assert statuses == [200] * 6
                assert _backend_errors() > errors
                warnings = [r for r in caplog.records if r.name == "atrium.ratelimit"]
                assert len(warnings) == 1  # warned once, not per request
                assert "redis unreachable" in warnings[0].getMessage()

                with _own_redis(tmp_path, port):

                    async def limited_again() -> bool:
                        return "ratelimit-limit" in (await c.get("/templates")).headers

                    await _until(limited_again)
                    statuses = [(await c.get("/templates")).status_code for _ in range(4)]
                    assert 429 in statuses  # the limit is enforced again, by itself


@pytest.mark.slow
async def test_redis_down_fails_closed_when_configured(
    settings: Settings, clean: FastAPI, tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with _own_redis(tmp_path, port) as redis_proc:
        async with _app(
            settings, redis_url=url, redis_prefix="closed-test:", rate_limit_fail_open=False
        ) as app:
            key, _ = await app.state.api_keys.create("ops", ("templates:read",))
            async with _client(app, key) as c:
                assert (await c.get("/templates")).status_code == 200
                redis_proc.send_signal(signal.SIGKILL)
                redis_proc.wait()
                refused = await c.get("/templates")
                assert refused.status_code == 503
                assert refused.headers["content-type"] == PROBLEM
                assert refused.headers["retry-after"] == "1"
                assert (await c.get("/livez")).status_code == 200
