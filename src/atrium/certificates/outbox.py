"""Transactional outbox for certificate (de)activations, and the worker that delivers it.

A change writes its event row in the same transaction as the certificate update, so an event
exists exactly when the change committed. The worker POSTs each event to
``ATRIUM_CERT_WEBHOOK_URL`` with ``X-Atrium-Signature: sha256=<hex HMAC-SHA256 of the body>``
under ``ATRIUM_CERT_WEBHOOK_SECRET``, retries failures with capped exponential backoff and
jitter, and marks delivered events. Delivery is at-least-once (a receiver deduplicates on
``X-Atrium-Event-Id``).

Order: only the oldest undelivered event of a certificate is ever eligible, so event N+1 of a
certificate is never sent before event N was acknowledged. Several workers (processes,
replicas) share the table safely: a worker claims events by writing a lease on them in one
statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has a single writer anyway); an
expired lease (a crashed worker) makes the event eligible again. Pending events survive
restarts because they are only rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import orjson
from sqlalchemy import Table, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atrium import __version__
from atrium.certificates.models import CertificateEvent
from atrium.platform.metrics import WEBHOOK_DELIVERIES, WEBHOOK_RETRIES
from atrium.platform.sql import claim
from atrium.settings import Settings

log = logging.getLogger("atrium.certificates.outbox")

SIGNATURE_HEADER = "X-Atrium-Signature"
EVENT_ID_HEADER = "X-Atrium-Event-Id"
_events = cast(Table, CertificateEvent.__table__)


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``: ``2026-11-25T12:00:00.000000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Atrium-Signature`` value of ``body``: ``sha256=<lower-case hex HMAC>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does: recompute over the raw body and compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header)


def record_change(
    session: AsyncSession, *, certificate_id: int, user_id: int, active: bool, changed_at: datetime
) -> None:
    """Add the event of a (de)activation to the caller's transaction."""
    payload = orjson.dumps(
        {
            "certificate_id": certificate_id,
            "user_id": user_id,
            "active": active,
            "changed_at": format_timestamp(changed_at),
        }
    ).decode()
    session.add(
        CertificateEvent(
            certificate_id=certificate_id,
            user_id=user_id,
            active=active,
            changed_at=changed_at,
            payload=payload,
            attempts=0,
            next_attempt_at=changed_at,
        )
    )


def backoff_delay(attempts: int, base: float, cap: float, rand: float | None = None) -> float:
    """Seconds before retry number ``attempts``: doubling from ``base``, capped, half jittered."""
    step = min(cap, base * 2.0 ** min(max(attempts - 1, 0), 62))
    return step / 2 + (random.random() if rand is None else rand) * step / 2


@dataclass(frozen=True)
class _Claimed:
    id: int
    certificate_id: int
    payload: str
    attempts: int


@dataclass
class OutboxStats:
    """Counts of one drain (for the CLI and tests)."""

    delivered: int = 0
    failed: int = 0


class OutboxWorker:
    """Claims due events, POSTs them, records the outcome; one per process."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        batch_size: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not settings.cert_webhook_url:
            raise ValueError("ATRIUM_CERT_WEBHOOK_URL is not set")
        if settings.cert_webhook_secret is None:
            raise ValueError("ATRIUM_CERT_WEBHOOK_URL needs ATRIUM_CERT_WEBHOOK_SECRET to sign")
        self.sessionmaker = sessionmaker
        self.url = settings.cert_webhook_url
        self.secret = settings.cert_webhook_secret.get_secret_value().encode()
        self.timeout = settings.cert_webhook_timeout
        self.backoff_base = settings.cert_webhook_backoff_seconds
        self.backoff_cap = settings.cert_webhook_backoff_max_seconds
        self.poll = settings.cert_webhook_poll_seconds
        # A lease outlives any attempt (bounded by ``timeout``), so it only lapses on a crash.
        self.lease = timedelta(seconds=2 * self.timeout + 30)
        self.batch_size = batch_size
        self.owner = f"{uuid.uuid4().hex[:16]}"
        self._wakeup = asyncio.Event()
        self._client = httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, transport=transport
        )

    async def aclose(self) -> None:
        """Release our leases (so another worker need not wait for them) and the HTTP client."""
        try:
            async with self.sessionmaker() as session, session.begin():
                await session.execute(
                    update(_events)
                    .where(_events.c.lease_owner == self.owner, _events.c.delivered_at.is_(None))
                    .values(lease_owner=None, lease_until=None)
                )
        except Exception:
            log.warning("could not release outbox leases", exc_info=True)
        await self._client.aclose()

    def wake(self) -> None:
        """A new event was committed: look now rather than at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until cancelled (the application's background task)."""
        log.info("webhook delivery started", extra={"owner": self.owner})
        while True:
            try:
                claimed = await self.run_once()
                wait = 0.0 if claimed else await self._idle_wait()
            except Exception:
                log.exception("webhook delivery round failed")
                wait = self.poll
            if wait > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait)

    async def drain(self, max_wait: float = 0.0) -> OutboxStats:
        """Deliver what is due now (and what becomes due within ``max_wait`` seconds)."""
        stats = OutboxStats()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while True:
            round_stats = await self._round()
            stats.delivered += round_stats.delivered
            stats.failed += round_stats.failed
            if round_stats.delivered or round_stats.failed:
                continue
            if await self.pending() == 0:
                return stats
            remaining = deadline - loop.time()
            if remaining <= 0:
                return stats
            await asyncio.sleep(min(remaining, max(await self._idle_wait(), 0.05)))

    async def pending(self) -> int:
        """Events not delivered yet."""
        async with self.sessionmaker() as session:
            count = await session.scalar(
                select(func.count()).select_from(_events).where(_events.c.delivered_at.is_(None))
            )
        return int(count or 0)

    async def run_once(self) -> int:
        """One round: claim due events, deliver them concurrently; the number claimed."""
        stats = await self._round()
        return stats.delivered + stats.failed

    async def _round(self) -> OutboxStats:
        claimed = await self._claim()
        stats = OutboxStats()
        if not claimed:
            return stats
        results = await asyncio.gather(*(self._deliver(event) for event in claimed))
        for ok in results:
            if ok:
                stats.delivered += 1
            else:
                stats.failed += 1
        return stats

    def _heads(self, now: datetime) -> Any:
        """Due, unleased events that are the oldest undelivered one of their certificate."""
        event = _events.alias("e")  # an alias: the claim's UPDATE must not correlate to it
        earlier = _events.alias("p")
        return (
            select(event.c.id)
            .where(
                event.c.delivered_at.is_(None),
                event.c.next_attempt_at <= now,
                or_(event.c.lease_until.is_(None), event.c.lease_until < now),
                ~exists().where(
                    earlier.c.certificate_id == event.c.certificate_id,
                    earlier.c.delivered_at.is_(None),
                    earlier.c.id < event.c.id,
                ),
            )
            .order_by(event.c.id)
            .limit(self.batch_size)
        )

    async def _claim(self) -> list[_Claimed]:
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            rows = await claim(
                session,
                _events,
                self._heads(now),
                {
                    "lease_owner": self.owner,
                    "lease_until": now + self.lease,
                    "attempts": _events.c.attempts + 1,
                },
                (_events.c.id, _events.c.certificate_id, _events.c.payload, _events.c.attempts),
            )
        claimed = [_Claimed(row[0], row[1], row[2], row[3]) for row in rows]
        claimed.sort(key=lambda c: c.id)
        return claimed

    async def _idle_wait(self) -> float:
        """Seconds until the earliest retry is due, at most the poll interval."""
        event = _events.alias("e")
        earlier = _events.alias("p")
        async with self.sessionmaker() as session:
            due = await session.scalar(
                select(func.min(event.c.next_attempt_at)).where(
                    event.c.delivered_at.is_(None),
                    event.c.lease_until.is_(None),
                    ~exists().where(
                        earlier.c.certificate_id == event.c.certificate_id,
                        earlier.c.delivered_at.is_(None),
                        earlier.c.id < event.c.id,
                    ),
                )
            )
        if due is None:
            return self.poll
        due = cast(datetime, due)
        if due.tzinfo is None:  # SQLite hands back naive UTC
            due = due.replace(tzinfo=UTC)
        return min(self.poll, max((due - utcnow()).total_seconds(), 0.01))

    async def _deliver(self, event: _Claimed) -> bool:
        body = event.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"atrium-webhooks/{__version__}",
            SIGNATURE_HEADER: sign(self.secret, body),
            EVENT_ID_HEADER: str(event.id),
            "X-Atrium-Delivery-Attempt": str(event.attempts),
        }
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(self.url, content=body, headers=headers)
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        now = utcnow()
        if error is None:
            values: dict[str, Any] = {
                "delivered_at": now,
                "lease_owner": None,
                "lease_until": None,
                "last_error": None,
            }
        else:
            delay = backoff_delay(event.attempts, self.backoff_base, self.backoff_cap)
            values = {
                "next_attempt_at": now + timedelta(seconds=delay),
                "lease_owner": None,
                "lease_until": None,
                "last_error": error,
            }
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(_events)
                .where(_events.c.id == event.id, _events.c.lease_owner == self.owner)
                .values(**values)
            )
        if error is None:
            WEBHOOK_DELIVERIES.labels("delivered").inc()
            log.info(
                "webhook delivered",
                extra={"event_id": event.id, "certificate_id": event.certificate_id},
            )
            return True
        WEBHOOK_DELIVERIES.labels("failed").inc()
        WEBHOOK_RETRIES.inc()
        log.warning(
            "webhook delivery failed; will retry",
            extra={"event_id": event.id, "attempt": event.attempts, "error": error},
        )
        return False
