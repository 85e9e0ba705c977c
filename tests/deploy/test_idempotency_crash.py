"""Idempotency-Key against real ``atrium serve`` processes, the way a flaky network and a lost
node treat it: a body cut off mid-way, ``kill -9`` during keyed batches, and a statement whose
server died while it waited on a lock.

What must hold: a request whose body never arrived whole neither runs nor claims its key; a
retry after a crash gets the original outcome (never "rejected: duplicate id"); the key of a
dead process can be retried within seconds; nothing is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.settings import Settings
from tests.hr.conftest import DEPARTMENTS, JOBS, employee
from tests.support import ServerProcess, run_server, settings_env

pytestmark = pytest.mark.slow

BATCH = "/hr/hired_employees/batch"
# A retry after the owner died must get through within this (seconds): the owner's transaction,
# and with it the key, is gone as soon as the database sees the connection drop.
RETRY_WITHIN = 5.0
# Seconds a server may take to start: generous, for a CI machine under load.
SERVER_START = 120.0


async def _seed(client: httpx.AsyncClient) -> None:
    for table, rows in (("departments", DEPARTMENTS), ("jobs", JOBS)):
        response = await client.post(f"/hr/{table}/batch", json=rows)
        assert response.status_code == 200, response.text


async def _retry_until_answered(
    client: httpx.AsyncClient, url: str, key: str, rows: list[dict[str, Any]]
) -> tuple[httpx.Response, float]:
    """POST with ``key`` until the answer is not "still in flight"; the answer and the wait."""
    started = time.monotonic()
    while True:
        response = await client.post(url + BATCH, json=rows, headers={"Idempotency-Key": key})
        waited = time.monotonic() - started
        if response.status_code != 409 or waited > 4 * RETRY_WITHIN:
            return response, waited
        await asyncio.sleep(0.2)


def _send_and_hang_up(server: ServerProcess, head: bytes, partial_body: bytes) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + partial_body)
        time.sleep(0.2)  # let the server read what came before the connection closes


async def test_a_body_cut_off_neither_runs_nor_poisons_its_key(
    client: httpx.AsyncClient, live_server: ServerProcess, admin_api_key: str
) -> None:
    await _seed(client)
    rows = [employee(n) for n in range(1, 201)]
    body = orjson.dumps(rows)
    common = (
        f"POST {BATCH} HTTP/1.1\r\nHost: atrium\r\nX-API-KEY: {admin_api_key}\r\n"
        "Content-Type: application/json\r\n"
    )
    # Content-Length promises the whole body; half of it comes, then the socket closes.
    by_length = common + f"Idempotency-Key: cut-length\r\nContent-Length: {len(body)}\r\n\r\n"
    _send_and_hang_up(live_server, by_length.encode(), body[: len(body) // 2])
    # Chunked: two chunks come, the terminating zero-length chunk never does.
    by_chunks = common + "Idempotency-Key: cut-chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    half = body[: len(body) // 2]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (half[:1000], half[1000:]))
    _send_and_hang_up(live_server, by_chunks.encode(), chunks)
    # Without a key: the route itself finds the body cut short (nothing stored, no error).
    unkeyed = common + f"Content-Length: {len(body)}\r\n\r\n"
    _send_and_hang_up(live_server, unkeyed.encode(), body[: len(body) // 3])

    headers = {"X-API-KEY": admin_api_key}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        first, _ = await _retry_until_answered(http, live_server.url, "cut-length", rows[:100])
        second, _ = await _retry_until_answered(http, live_server.url, "cut-chunked", rows[100:])
    for answer, part in ((first, rows[:100]), (second, rows[100:])):
        # The retry with the whole body ran as the first real attempt: not a 422 for a "reused"
        # key, not a replay of an answer to half a body.
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": len(part), "inserted": len(part), "rejected": []}
        assert "idempotent-replayed" not in answer.headers
    assert "unhandled error" not in live_server.output()


async def test_kill_9_during_keyed_batches_loses_and_duplicates_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_api_key: str,
    session: AsyncSession,
    tmp_path: Path,
) -> None:
    await _seed(client)
    batches = {f"crash-{n}": [employee(n * 1000 + i) for i in range(1, 201)] for n in range(32)}
    pending = list(batches)
    answers: dict[str, httpx.Response] = {}
    enough = asyncio.Event()  # a dozen answered: the kill comes in the middle of the flow
    env = settings_env(settings)
    headers = {"X-API-KEY": admin_api_key}

    with run_server(env, tmp_path / "first", timeout=SERVER_START) as first:

        async def sender(http: httpx.AsyncClient) -> None:
            while pending and first.proc.poll() is None:
                key = pending.pop(0)
                try:
                    response = await http.post(
                        first.url + BATCH, json=batches[key], headers={"Idempotency-Key": key}
                    )
                except httpx.HTTPError:
                    pending.append(key)  # no answer: retried once a server is back
                else:
                    answers[key] = response
                    if len(answers) >= 12:
                        enough.set()

        async def killer() -> None:
            await enough.wait()
            os.killpg(first.proc.pid, signal.SIGKILL)  # the whole replica, like a lost node
            first.proc.wait()

        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            await asyncio.gather(killer(), *(sender(http) for _ in range(4)))
        unanswered = list(pending)
    assert unanswered, "the kill came too late to catch a batch in flight"

    with run_server(env, tmp_path / "second", timeout=SERVER_START) as second:
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            for key in unanswered:
                answers[key], waited = await _retry_until_answered(
                    http, second.url, key, batches[key]
                )
                assert waited < RETRY_WITHIN, f"{key} was refused as in flight for {waited:.1f} s"

    for key in batches:
        # The original outcome, replayed or run for the first time: never "duplicate id".
        assert answers[key].status_code == 200, (key, answers[key].text)
        assert answers[key].json() == {"received": 200, "inserted": 200, "rejected": []}, key
    count, distinct = (
        await session.execute(text("SELECT count(*), count(DISTINCT id) FROM hired_employees"))
    ).one()
    assert (count, distinct) == (200 * len(batches), 200 * len(batches))


@pytest.mark.postgres
async def test_the_statement_of_a_killed_server_stops_and_frees_its_key(
    client: httpx.AsyncClient, settings: Settings, admin_api_key: str, tmp_path: Path
) -> None:
    import asyncpg

    await _seed(client)
    rows = [employee(n) for n in range(1, 101)]
    env = settings_env(settings)
    assert settings.database_url is not None
    watcher = await asyncpg.connect(settings.database_url)
    holder = await asyncpg.connect(settings.database_url)
    try:
        blocked = holder.transaction()
        await blocked.start()
        # The batch's INSERT will wait on this lock for as long as the test keeps it.
        await holder.execute("LOCK TABLE hired_employees IN ACCESS EXCLUSIVE MODE")
        with run_server(env, tmp_path / "doomed", timeout=SERVER_START) as doomed:
            http = httpx.AsyncClient(headers={"X-API-KEY": admin_api_key}, timeout=60)
            request = asyncio.create_task(
                http.post(doomed.url + BATCH, json=rows, headers={"Idempotency-Key": "doomed"})
            )
            backend = None
            async with asyncio.timeout(20):
                while backend is None:
                    backend = await watcher.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'atrium' "
                        "AND datname = current_database() AND wait_event_type = 'Lock' "
                        "AND query LIKE 'INSERT INTO hired_employees%'"
                    )
                    await asyncio.sleep(0.05)
            os.killpg(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait()
            with pytest.raises(httpx.HTTPError):
                await request
            await http.aclose()
        # Still holding the lock: the dead server's statement must stop by itself.
        gone_after = None
        started = time.monotonic()
        while time.monotonic() - started < 10:
            if not await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend
            ):
                gone_after = time.monotonic() - started
                break
            await asyncio.sleep(0.1)
        assert gone_after is not None, "the dead server's statement ran on"
        assert gone_after < RETRY_WITHIN, gone_after
        await blocked.rollback()
    finally:
        await holder.close()
        await watcher.close()

    with run_server(env, tmp_path / "next", timeout=SERVER_START) as server:
        async with httpx.AsyncClient(headers={"X-API-KEY": admin_api_key}, timeout=60) as http:
            answer, waited = await _retry_until_answered(http, server.url, "doomed", rows)
    assert waited < RETRY_WITHIN
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 100, "inserted": 100, "rejected": []}
