"""Writes racing a delete, for real: two requests at once on two database connections.

Whatever the interleaving, an update or delete of a row another request deletes answers 404
(it is gone), never 500. Each race is run over a spread of offsets so that both orders and
the overlap in between (the slow Argon2 hash of a password change sits between the read and
the write) all happen.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.certificates.models import Certificate, User
from atrium.certificates.tokens import hash_password
from tests.certificates.conftest import PASSWORD

_HASH: list[str] = []

# Seconds the second request waits after the first starts: 0 (together) up to well past the
# first one's read (an Argon2 hash takes tens of milliseconds).
OFFSETS = [0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08]


async def _users(session: AsyncSession, count: int) -> list[int]:
    """``count`` users stored directly (registering each would hash a password: slow)."""
    if not _HASH:
        _HASH.append(await hash_password(PASSWORD))
    start = await session.scalar(select(func.coalesce(func.max(User.id), 0))) or 0
    users = [
        User(
            name="Racer",
            email=f"racer{start + n}@example.com",
            email_key=f"racer{start + n}@example.com",
            password_hash=_HASH[0],
        )
        for n in range(count)
    ]
    session.add_all(users)
    await session.commit()
    return [user.id for user in users]


async def _certificate(client: httpx.AsyncClient, user_id: int, headers: dict[str, str]) -> int:
    response = await client.post(
        f"/users/{user_id}/certificates",
        json={"private_key": "a2V5", "body": "-----BEGIN CERTIFICATE-----", "active": True},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    certificate_id: int = response.json()["id"]
    return certificate_id


async def _race(
    first: Callable[[], Awaitable[httpx.Response]],
    second: Callable[[], Awaitable[httpx.Response]],
    offset: float,
) -> tuple[int, int]:
    async def later() -> httpx.Response:
        await asyncio.sleep(offset)
        return await second()

    a, b = await asyncio.gather(first(), later())
    return a.status_code, b.status_code


async def test_update_racing_delete_of_a_user_is_404_never_500(
    client: httpx.AsyncClient, admin_headers: dict[str, str], session: AsyncSession
) -> None:
    change = {"password": "a-new-password-1"}  # read, hash (slow), write
    # How long a password change takes here: the delete is sent at fractions of it, so it
    # lands before, during and after the change whatever the machine's speed.
    (probe,) = await _users(session, 1)
    started = time.perf_counter()
    assert (await client.patch(f"/users/{probe}", json=change, headers=admin_headers)).is_success
    took = time.perf_counter() - started
    seen: Counter[tuple[int, int]] = Counter()
    fractions = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.2, 2.0, 3.0]
    for fraction, user_id in zip(fractions, await _users(session, len(fractions)), strict=True):
        path = f"/users/{user_id}"
        outcome = await _race(
            lambda path=path: client.patch(path, json=change, headers=admin_headers),
            lambda path=path: client.delete(path, headers=admin_headers),
            fraction * took,
        )
        seen[outcome] += 1
        assert outcome in {(200, 204), (404, 204)}, (fraction, outcome)
    assert await session.scalar(select(func.count()).select_from(User)) == 1
    # Both orders happened (else the race was never run).
    assert seen[(200, 204)], seen
    assert seen[(404, 204)], seen


async def test_delete_racing_delete_is_one_204_and_one_404(
    client: httpx.AsyncClient, admin_headers: dict[str, str], session: AsyncSession
) -> None:
    rounds = OFFSETS[:4]
    for offset, user_id in zip(rounds, await _users(session, len(rounds)), strict=True):
        path = f"/users/{user_id}"
        outcome = await _race(
            lambda path=path: client.delete(path, headers=admin_headers),
            lambda path=path: client.delete(path, headers=admin_headers),
            offset,
        )
        assert sorted(outcome) == [204, 404], (offset, outcome)


async def test_certificate_writes_racing_the_users_delete_are_404_never_500(
    client: httpx.AsyncClient, admin_headers: dict[str, str], session: AsyncSession
) -> None:
    statuses: Counter[int] = Counter()
    for offset, user_id in zip(OFFSETS, await _users(session, len(OFFSETS)), strict=True):
        certificate = await _certificate(client, user_id, admin_headers)
        base = f"/users/{user_id}/certificates"

        async def delete_user(user_id: int = user_id, offset: float = offset) -> httpx.Response:
            await asyncio.sleep(offset)
            return await client.delete(f"/users/{user_id}", headers=admin_headers)

        results = await asyncio.gather(
            client.post(
                base,
                json={"private_key": "a2V5", "body": "-----BEGIN CERTIFICATE-----", "active": True},
                headers=admin_headers,
            ),
            client.patch(f"{base}/{certificate}", json={"active": False}, headers=admin_headers),
            client.delete(f"{base}/{certificate}", headers=admin_headers),
            delete_user(),
        )
        assert results[3].status_code == 204, results[3].text
        for response in results[:3]:
            statuses[response.status_code] += 1
            assert response.status_code in {200, 201, 204, 404}, response.text
    assert await session.scalar(select(func.count()).select_from(Certificate)) == 0
    assert statuses[404], statuses
