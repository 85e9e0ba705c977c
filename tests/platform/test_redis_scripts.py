"""The hot path's script calls over one pipelined redis-py connection: ordering, NOSCRIPT,
error replies, AUTH/SELECT, timeouts, and TLS and Unix sockets for real, end to end.

Each test starts its own ``redis-server`` (TCP with a password, TLS-only with a certificate
made here, or a Unix socket only), so what passes is what production's URLs do.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from atrium.app import create_app
from atrium.platform.redis_scripts import PipelinedScripts, RedisUnavailable, Script, ScriptError
from atrium.settings import Settings
from tests.support import free_port


@dataclass
class OwnRedis:
    """A private redis-server and the URL that reaches it."""

    url: str
    proc: subprocess.Popen[bytes]


def _start(tmp_path: Path, url: str, *args: str) -> Iterator[OwnRedis]:
    executable = shutil.which("redis-server")
    if executable is None:
        # The embedded run may come before CI installs it; the PostgreSQL + Redis run
        # (ATRIUM_TEST_REQUIRE_ALL=1) fails on any skip, so this cannot pass unnoticed there.
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    proc = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        yield OwnRedis(url, proc)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (the test's own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atrium-test-redis")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """Plain TCP with a password."""
    port = free_port()
    yield from _start(
        tmp_path,
        f"redis://:s3cret@127.0.0.1:{port}/3",
        *("--port", str(port), "--requirepass", "s3cret"),
    )


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """TLS only (no plain port), with a self-signed certificate the client must verify."""
    cert, key = _self_signed(tmp_path)
    port = free_port()
    yield from _start(
        tmp_path,
        f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}",
        *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
        *(
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
        ),
    )


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Unix socket only (no TCP port)."""
    socket_path = tmp_path / "redis.sock"
    yield from _start(
        tmp_path,
        f"unix://{socket_path}?db=2",
        *("--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"),
    )


ECHO = Script("return {ARGV[1], redis.call('INCR', KEYS[1])}")


async def _pipelined_calls_get_their_own_replies(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=2)
    scripts = PipelinedScripts(client)
    try:
        replies = await asyncio.gather(*(scripts.run(ECHO, ["n"], [i]) for i in range(300)))
        assert [r[0] for r in replies] == [str(i).encode() for i in range(300)]
        assert sorted(r[1] for r in replies) == list(range(1, 301))
        assert await client.get("n") == b"300"  # the database of the URL (SELECT happened)
        # A script Redis has not seen (e.g. after a restart) is sent in full once.
        await client.script_flush()
        assert (await scripts.run(ECHO, ["n"], ["x"]))[0] == b"x"
        # An error reply fails its own call only, among pipelined ones.
        failing = scripts.run(Script("return redis.call('NOPE')"), [], [])
        results = await asyncio.gather(
            scripts.run(ECHO, ["n"], ["a"]),
            failing,
            scripts.run(ECHO, ["n"], ["b"]),
            return_exceptions=True,
        )
        assert results[0][0] == b"a"  # type: ignore[index]
        assert isinstance(results[1], ScriptError)
        assert results[2][0] == b"b"  # type: ignore[index]
    finally:
        await scripts.close()
        await client.aclose()


async def test_tcp_with_password_and_database(tcp_redis: OwnRedis) -> None:
    await _pipelined_calls_get_their_own_replies(tcp_redis.url)


async def test_tls(tls_redis: OwnRedis) -> None:
    await _pipelined_calls_get_their_own_replies(tls_redis.url)


async def test_unix_socket(unix_redis: OwnRedis) -> None:
    await _pipelined_calls_get_their_own_replies(unix_redis.url)


async def test_wrong_password_and_unreachable_server_are_unavailable(
    tcp_redis: OwnRedis,
) -> None:
    wrong = redis.asyncio.Redis.from_url(tcp_redis.url.replace("s3cret", "wrong"))
    with pytest.raises(RedisUnavailable):
        await PipelinedScripts(wrong).run(Script("return 1"), [], [])
    await wrong.aclose()
    nobody = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=2)
    with pytest.raises(RedisUnavailable):
        await PipelinedScripts(nobody).run(Script("return 1"), [], [])
    await nobody.aclose()


async def test_a_hung_server_times_out_and_the_client_reconnects(tcp_redis: OwnRedis) -> None:
    client = redis.asyncio.Redis.from_url(tcp_redis.url, socket_timeout=0.5)
    scripts = PipelinedScripts(client)
    script = Script("return ARGV[1]")
    try:
        assert await scripts.run(script, [], ["before"]) == b"before"
        tcp_redis.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(RedisUnavailable):
                await scripts.run(script, [], ["during"])
        finally:
            tcp_redis.proc.send_signal(signal.SIGCONT)
        # The late reply of the timed-out call never reaches a later caller.
        assert await scripts.run(script, [], ["after"]) == b"after"
    finally:
        await scripts.close()
        await client.aclose()


@pytest.fixture(params=["tls", "unix"])
def secured_redis(request: pytest.FixtureRequest) -> OwnRedis:
    """The two transports that used to fall back to the slow path."""
    own: OwnRedis = request.getfixturevalue(f"{request.param}_redis")
    return own


@pytest.fixture
async def app_on(secured_redis: OwnRedis, settings: Settings) -> AsyncIterator[FastAPI]:
    """The app wired to that Redis, as ``ATRIUM_REDIS_URL`` would."""
    app = create_app(
        settings.model_copy(
            update={"redis_url": secured_redis.url, "redis_prefix": "atrium-hot-path:"}
        )
    )
    async with app.router.lifespan_context(app):
        yield app


async def test_the_hot_path_is_one_script_call_over_tls_and_unix_sockets(
    app_on: FastAPI, secured_redis: OwnRedis
) -> None:
    key, _ = await app_on.state.api_keys.create("hot-path", ("templates:read", "templates:write"))
    transport = httpx.ASGITransport(app=app_on)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-API-KEY": key}
    ) as client:
        created = await client.post(
            "/templates", json={"name": "hot", "description": "d", "content": "c"}
        )
        assert created.status_code == 201, created.text
        path = f"/templates/{created.json()['templateid']}"
        assert (await client.get(path)).status_code == 200  # a miss: loaded and cached
        plain = redis.asyncio.Redis.from_url(secured_redis.url)
        before = await plain.info("commandstats")
        for _ in range(5):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.json()["name"] == "hot"
        after = await plain.info("commandstats")
        await plain.aclose()
    # Each cached read was one EVALSHA (key, limit and entry together), on the pipelined
    # connection; the other counts are the commands the script runs inside Redis.
    assert isinstance(app_on.state.limiter.fast, PipelinedScripts)
    calls = {
        name.removeprefix("cmdstat_"): after[name]["calls"]
        - before.get(name, {"calls": 0})["calls"]
        for name in after
        if name.startswith("cmdstat_") and name != "cmdstat_info"
    }
    assert {name: n for name, n in calls.items() if n} == {
        "evalsha": 5,
        "hget": 5,  # the key's record
        "time": 5,  # the rate limit's clock
        "set": 5,  # the rate limit's bucket
        "get": 15,  # the bucket, the cache namespace's version, the entry
    }
