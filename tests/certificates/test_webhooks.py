"""Webhook notifications: transactional outbox, retries, order per certificate, restarts.

A real HTTP receiver on loopback fails the first attempts and goes down for a while; every
event must still arrive, signed, in order per certificate.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import select

from atrium.app import create_app
from atrium.certificates import service
from atrium.certificates.models import Certificate, CertificateEvent
from atrium.certificates.outbox import OutboxWorker, backoff_delay, sign
from atrium.certificates.schemas import CertificateCreate, UserCreate
from atrium.platform.db import commit
from atrium.settings import Settings
from tests.certificates.conftest import TestUser, add_certificate, register
from tests.certificates.receiver import Receiver
from tests.support import free_port, run_server, settings_env

SECRET = b"webhook-test-secret"


def hook_settings(settings: Settings, url: str) -> Settings:
    """The session's settings plus a webhook with fast retries."""
    return settings.model_copy(
        update={
            "cert_webhook_url": url,
            "cert_webhook_secret": SecretStr(SECRET.decode()),
            "cert_webhook_timeout": 5.0,
            "cert_webhook_backoff_seconds": 0.05,
            "cert_webhook_backoff_max_seconds": 0.4,
            "cert_webhook_poll_seconds": 0.2,
        }
    )


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An application with its lifespan (and so its webhook worker) running."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield application, client


async def events(app: FastAPI) -> list[CertificateEvent]:
    """Every outbox row, oldest first."""
    async with app.state.sessionmaker() as session:
        return list(
            (await session.scalars(select(CertificateEvent).order_by(CertificateEvent.id))).all()
        )


async def toggle(client: httpx.AsyncClient, user: TestUser, cid: int, values: list[bool]) -> None:
    """PATCH the certificate through ``values`` one after the other (both paths in turn)."""
    for i, value in enumerate(values):
        path = f"/users/{user.id}/certificates/{cid}" + ("/active" if i % 2 else "")
        response = await client.patch(path, json={"active": value}, headers=user.headers)
        assert response.status_code == 200, response.text


async def all_marked_delivered(app: FastAPI) -> None:
    """Until the workers recorded every acknowledged delivery (just after the receiver saw it)."""

    async def done() -> bool:
        return all(e.delivered_at is not None for e in await events(app))

    await wait_until(done)


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Poll an async predicate: states only the database shows have no event to wait on."""
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def check_delivered_sequences(receiver: Receiver, expected: dict[int, list[bool]]) -> None:
    """Per certificate, the accepted events (first acceptance of each) replay the changes."""
    first_accept: dict[int, tuple[int, bool]] = {}
    for request in receiver.accepted():
        first_accept.setdefault(request.event_id, (request.certificate_id, request.active))
    got: dict[int, list[bool]] = {}
    for _, (cid, active) in sorted(first_accept.items()):
        got.setdefault(cid, []).append(active)
    assert got == expected


def test_backoff_grows_exponentially_with_capped_jitter() -> None:
    lows = [backoff_delay(n, 1.0, 60.0, rand=0.0) for n in range(1, 10)]
    highs = [backoff_delay(n, 1.0, 60.0, rand=1.0) for n in range(1, 10)]
    assert lows[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert highs[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert max(highs) == 60.0
    assert backoff_delay(10_000, 1.0, 60.0, rand=1.0) == 60.0
    assert all(
        lo <= backoff_delay(n, 1.0, 60.0) <= hi
        for n, lo, hi in zip(range(1, 10), lows, highs, strict=True)
    )


def test_signature_is_hmac_sha256_hex_of_the_body() -> None:
    import hashlib
    import hmac

    body = (
        b'{"certificate_id":1,"user_id":2,"active":false,'
        b'"changed_at":"2026-11-25T12:00:00.000000Z"}'
    )
    assert sign(SECRET, body) == "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


async def test_event_is_written_in_the_same_transaction(clean: FastAPI) -> None:
    ctx = clean.state.certificates
    async with clean.state.sessionmaker() as session:
        user = await service.create_user(
            session,
            ctx,
            UserCreate(name="Ada", email="ada@example.com", password="long-password"),  # type: ignore[arg-type]
        )
        certificate = await service.create_certificate(
            session, ctx, user.id, CertificateCreate(private_key="a2V5", body="b", active=True)
        )
        await commit(session)
        user_id, cid = user.id, certificate.id
        assert await events(clean) == []  # creating is not a change of state

        await service.set_active(session, ctx, user_id, cid, False)
        await session.rollback()  # the change is abandoned: so is its event
        assert await events(clean) == []
        assert await session.scalar(select(Certificate.active).where(Certificate.id == cid)) is True

        await service.set_active(session, ctx, user_id, cid, False)
        await service.set_active(session, ctx, user_id, cid, False)  # no change: no event
        await commit(session)
    rows = await events(clean)
    assert [(r.certificate_id, r.user_id, r.active, r.delivered_at) for r in rows] == [
        (cid, user_id, False, None)
    ]
    assert rows[0].payload.startswith('{"certificate_id":')


async def test_every_event_arrives_in_order_despite_failures_and_downtime(
    clean: FastAPI, settings: Settings
) -> None:
    receiver = Receiver(secret=SECRET, fail_first=3)
    await receiver.start()
    delivered_before = metric("atrium_webhook_deliveries_total", {"outcome": "delivered"})
    retries_before = metric("atrium_webhook_retries_total")
    expected: dict[int, list[bool]] = {}
    try:
        async with running_app(hook_settings(settings, receiver.url)) as (app, client):
            users = [await register(client) for _ in range(2)]
            certificates = [(u, await add_certificate(client, u)) for u in users for _ in range(2)]

            async def phase(lengths: list[int]) -> None:
                plans = []
                for (user, cid), length in zip(certificates, lengths, strict=True):
                    start = expected.get(cid, [True])[-1]
                    values = [(not start) if i % 2 == 0 else start for i in range(length)]
                    expected.setdefault(cid, []).extend(values)
                    plans.append(toggle(client, user, cid, values))
                await asyncio.gather(*plans)

            await phase([3, 2, 4, 1])
            await receiver.wait_for_events({e.id for e in await events(app)})

            await receiver.go_down()
            await phase([2, 3, 1, 2])

            async def refused() -> bool:
                return any(
                    e.delivered_at is None and e.last_error and "Connect" in e.last_error
                    for e in await events(app)
                )

            await wait_until(refused)  # the worker really met a closed port
            await receiver.come_up()
            await receiver.wait_for_events({e.id for e in await events(app)})
            await all_marked_delivered(app)
            rows = await events(app)
    finally:
        await receiver.stop()

    assert len(rows) == sum(len(v) for v in expected.values()) == 18
    assert all(r.delivered_at is not None and r.lease_owner is None for r in rows)
    receiver.check_signatures()
    receiver.check_order()
    check_delivered_sequences(receiver, expected)
    failed = [r for r in receiver.requests if r.status != 200]
    assert len(failed) == 3
    assert any(r.attempt > 1 for r in receiver.accepted())
    for request in receiver.accepted():
        assert set(request.payload) == {"certificate_id", "user_id", "active", "changed_at"}
        assert str(request.payload["changed_at"]).endswith("Z")
    assert (
        metric("atrium_webhook_deliveries_total", {"outcome": "delivered"}) - delivered_before >= 18
    )
    assert metric("atrium_webhook_retries_total") - retries_before >= 4  # 3 500s + refusals


async def test_pending_events_survive_a_restart(clean: FastAPI, settings: Settings) -> None:
    receiver = Receiver(secret=SECRET, port=free_port())  # not listening yet
    expected: dict[int, list[bool]] = {}
    async with running_app(hook_settings(settings, receiver.url)) as (app, client):
        user = await register(client)
        for _ in range(2):
            cid = await add_certificate(client, user)
            expected[cid] = [False, True, False]
            await toggle(client, user, cid, expected[cid])

        async def tried() -> bool:
            return any(e.attempts > 0 for e in await events(app))

        await wait_until(tried)
    rows = await events(clean)
    assert len(rows) == 6
    assert all(r.delivered_at is None for r in rows)
    assert all(r.lease_owner is None for r in rows)  # released on shutdown
    assert receiver.requests == []

    await receiver.start()
    try:
        async with running_app(hook_settings(settings, receiver.url)) as (app, _):
            await receiver.wait_for_events({r.id for r in rows})
            await all_marked_delivered(app)
    finally:
        await receiver.stop()
    receiver.check_signatures()
    receiver.check_order()
    check_delivered_sequences(receiver, expected)


async def test_two_workers_share_the_outbox_without_duplicates_or_reordering(
    client: httpx.AsyncClient, clean: FastAPI, settings: Settings
) -> None:
    receiver = Receiver(secret=SECRET, fail_first=5)
    await receiver.start()
    rng = random.Random(7)
    expected: dict[int, list[bool]] = {}
    users = [await register(client) for _ in range(3)]
    for user in users:
        for _ in range(3):
            cid = await add_certificate(client, user)
            values = [i % 2 == 1 for i in range(rng.randint(1, 5))]
            expected[cid] = values
            await toggle(client, user, cid, values)
    rows = await events(clean)
    workers = [
        OutboxWorker(clean.state.sessionmaker, hook_settings(settings, receiver.url), batch_size=3)
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await receiver.wait_for_events({r.id for r in rows})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in workers:
            await worker.aclose()
        await receiver.stop()
    receiver.check_signatures()
    receiver.check_order()
    check_delivered_sequences(receiver, expected)
    accepted_ids = [r.event_id for r in receiver.accepted()]
    assert len(accepted_ids) == len(set(accepted_ids)) == len(rows)


async def test_deliver_command_drains_the_outbox(
    client: httpx.AsyncClient, clean: FastAPI, settings: Settings
) -> None:
    import subprocess
    import sys

    user = await register(client)
    cid = await add_certificate(client, user)
    await toggle(client, user, cid, [False, True])
    receiver = Receiver(secret=SECRET, fail_first=1)
    await receiver.start()
    try:
        env = settings_env(
            settings,
            ATRIUM_CERT_WEBHOOK_URL=receiver.url,
            ATRIUM_CERT_WEBHOOK_SECRET=SECRET.decode(),
            ATRIUM_CERT_WEBHOOK_BACKOFF_SECONDS="0.05",
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "atrium.cli",
            "certificates",
            "deliver",
            "--wait",
            "30",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await process.communicate()
    finally:
        await receiver.stop()
    assert process.returncode == 0, err.decode()
    assert b"delivered 2, failed attempts 1, pending 0" in err
    receiver.check_order()
    check_delivered_sequences(receiver, {cid: [False, True]})


@pytest.mark.postgres
async def test_two_server_processes_deliver_in_order(
    clean: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    """Two ``atrium serve`` processes, each with its worker, on one database and receiver."""
    receiver = Receiver(secret=SECRET, fail_first=4)
    await receiver.start()
    env = settings_env(
        settings,
        ATRIUM_CERT_WEBHOOK_URL=receiver.url,
        ATRIUM_CERT_WEBHOOK_SECRET=SECRET.decode(),
        ATRIUM_CERT_WEBHOOK_BACKOFF_SECONDS="0.05",
        ATRIUM_CERT_WEBHOOK_BACKOFF_MAX_SECONDS="0.4",
        ATRIUM_CERT_WEBHOOK_POLL_SECONDS="0.2",
    )
    expected: dict[int, list[bool]] = {}
    try:
        with run_server(env, tmp_path / "a") as first, run_server(env, tmp_path / "b") as second:
            async with (
                httpx.AsyncClient(base_url=first.url, timeout=30) as a,
                httpx.AsyncClient(base_url=second.url, timeout=30) as b,
            ):
                users = [await register(a) for _ in range(2)]
                plans = []
                for n, user in enumerate(users):
                    for m in range(3):
                        cid = await add_certificate(a, user)
                        values = [i % 2 == 1 for i in range(2 + (n + m) % 3)]
                        expected[cid] = values

                        async def run(
                            user: TestUser = user, cid: int = cid, values: list[bool] = values
                        ) -> None:
                            # Alternate servers for the changes of one certificate.
                            for i, value in enumerate(values):
                                target = a if i % 2 == 0 else b
                                r = await target.patch(
                                    f"/users/{user.id}/certificates/{cid}",
                                    json={"active": value},
                                    headers=user.headers,
                                )
                                assert r.status_code == 200

                        plans.append(run())
                await asyncio.gather(*plans)
                rows = await events(clean)
                await receiver.wait_for_events({r.id for r in rows}, within=90)
    finally:
        await receiver.stop()
    receiver.check_signatures()
    receiver.check_order()
    check_delivered_sequences(receiver, expected)
