"""Start-up and shut-down of the certificates domain inside the application's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI

from atrium.certificates.crypto import Keyring
from atrium.certificates.keys import load_keyring, load_token_secret
from atrium.certificates.outbox import OutboxWorker
from atrium.certificates.service import CertificatesContext
from atrium.certificates.tokens import TokenSigner
from atrium.platform.cache import Cache
from atrium.settings import Settings

log = logging.getLogger("atrium.certificates")


@dataclass(frozen=True)
class CertificatesSecrets:
    """The encryption key ring and the token signer."""

    keyring: Keyring
    tokens: TokenSigner


def load_secrets(settings: Settings) -> CertificatesSecrets:
    """Load (or, embedded, generate) the keys; :class:`MissingSecretError` where they must be
    configured and are not, so the application refuses to start.
    """
    return CertificatesSecrets(
        keyring=load_keyring(settings),
        tokens=TokenSigner(load_token_secret(settings), settings.access_token_ttl_seconds),
    )


@contextlib.asynccontextmanager
async def certificates_lifespan(
    app: FastAPI, settings: Settings, cache: Cache, secrets: CertificatesSecrets
) -> AsyncIterator[CertificatesContext]:
    """Put the services context on ``app.state.certificates`` and run the webhook worker when
    one is configured (it picks up events left pending by earlier runs).
    """
    worker: OutboxWorker | None = None
    task: asyncio.Task[None] | None = None
    if settings.cert_webhook_url and settings.cert_webhook_secret is None:
        # Webhooks are always signed: events wait in the outbox until a secret is configured.
        log.error(
            "ATRIUM_CERT_WEBHOOK_URL is set but ATRIUM_CERT_WEBHOOK_SECRET is not: "
            "certificate webhooks are not delivered"
        )
    elif settings.cert_webhook_url:
        worker = OutboxWorker(app.state.sessionmaker, settings)
        task = asyncio.create_task(worker.run(), name="certificate-webhooks")

    async def wake_worker() -> None:
        if worker is not None:
            worker.wake()

    ctx = CertificatesContext(
        sessionmaker=app.state.sessionmaker,
        cache=cache,
        keyring=secrets.keyring,
        tokens=secrets.tokens,
        events_committed=wake_worker,
    )
    app.state.certificates = ctx
    app.state.certificates_worker = worker
    try:
        yield ctx
    finally:
        if task is not None and worker is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await worker.aclose()
