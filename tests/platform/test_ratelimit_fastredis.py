"""The hot path's pipelined Redis client: parsing, ordering, NOSCRIPT, AUTH/SELECT, timeouts."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import redis.asyncio

from atrium.platform.fastredis import (
    PipelinedScripts,
    RedisUnavailable,
    Script,
    ScriptError,
    pack,
    parse,
)
from tests.platform.test_ratelimit import _own_redis
from tests.support import free_port


def test_parser_handles_every_reply_shape_and_partial_input() -> None:
    reply = b"*5\r\n:1\r\n$3\r\nabc\r\n$-1\r\n*2\r\n+OK\r\n:-7\r\n-ERR boom\r\n"
    value, end = parse(bytearray(reply), 0)  # type: ignore[misc]
    assert value[:4] == [1, b"abc", None, [b"OK", -7]]
    assert value[4].message == "ERR boom"
    assert end == len(reply)
    for cut in range(len(reply)):  # every prefix is "incomplete", never a wrong value
        assert parse(bytearray(reply[:cut]), 0) is None
    binary = b"\r\n\x00" * 3
    assert parse(bytearray(b"$9\r\n" + binary + b"\r\n"), 0) == (binary, 15)
    assert pack(b"GET", "k", 5) == b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\n5\r\n"


@pytest.fixture
def own_redis(tmp_path: Path) -> tuple[int, object]:
    port = free_port()
    with _own_redis(tmp_path, port, "--requirepass", "s3cret") as proc:
        yield port, proc


async def test_pipelined_calls_get_their_own_replies(own_redis: tuple[int, object]) -> None:
    port, _ = own_redis
    client = PipelinedScripts("127.0.0.1", port, db=3, password="s3cret", timeout=2)
    echo = Script("return {ARGV[1], redis.call('INCR', KEYS[1])}")
    try:
        replies = await asyncio.gather(*(client.run(echo, ["n"], [i]) for i in range(200)))
        assert [r[0] for r in replies] == [str(i).encode() for i in range(200)]
        assert sorted(r[1] for r in replies) == list(range(1, 201))
        # SELECT happened: the counter lives in database 3.
        plain = redis.asyncio.Redis(port=port, password="s3cret", db=3)
        assert await plain.get("n") == b"200"
        # A script Redis has not seen (e.g. after a restart) is sent in full once.
        await plain.script_flush()
        assert (await client.run(echo, ["n"], ["x"]))[0] == b"x"
        await plain.aclose()
        with pytest.raises(ScriptError):
            await client.run(Script("return redis.call('NOPE')"), [], [])
        assert (await client.run(echo, ["n"], ["still fine"]))[0] == b"still fine"
    finally:
        await client.close()


async def test_wrong_password_and_unreachable_server_are_unavailable(
    own_redis: tuple[int, object],
) -> None:
    port, _ = own_redis
    client = PipelinedScripts("127.0.0.1", port, password="wrong", timeout=2)
    with pytest.raises(ScriptError):
        await client.run(Script("return 1"), [], [])
    await client.close()
    nobody = PipelinedScripts("127.0.0.1", free_port(), timeout=2)
    with pytest.raises(RedisUnavailable):
        await nobody.run(Script("return 1"), [], [])


async def test_a_hung_server_times_out_and_the_client_reconnects(
    own_redis: tuple[int, object],
) -> None:
    port, proc = own_redis
    client = PipelinedScripts("127.0.0.1", port, password="s3cret", timeout=0.5)
    script = Script("return ARGV[1]")
    try:
        assert await client.run(script, [], ["before"]) == b"before"
        proc.send_signal(signal.SIGSTOP)  # type: ignore[attr-defined]
        try:
            with pytest.raises(RedisUnavailable):
                await client.run(script, [], ["during"])
        finally:
            proc.send_signal(signal.SIGCONT)  # type: ignore[attr-defined]
        # The late reply of the timed-out call never reaches a later caller.
        assert await client.run(script, [], ["after"]) == b"after"
    finally:
        await client.close()


async def test_built_from_a_redis_py_client() -> None:
    plain = redis.asyncio.Redis.from_url("redis://:pw@10.1.2.3:6380/4", socket_timeout=1.5)
    client = PipelinedScripts.for_client(plain)
    assert client is not None
    assert (client.host, client.port, client.db, client.password, client.timeout) == (
        "10.1.2.3",
        6380,
        4,
        "pw",
        1.5,
    )
    assert PipelinedScripts.for_client(redis.asyncio.Redis.from_url("rediss://h:6380/0")) is None
    assert PipelinedScripts.for_client(redis.asyncio.Redis.from_url("unix:///tmp/r.sock")) is None
    await plain.aclose()
