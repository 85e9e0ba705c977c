"""``atrium certificates …``: key generation and rotation, re-encryption, webhook delivery."""

from __future__ import annotations

import asyncio
import time

import click
from sqlalchemy import func, select

from atrium.certificates.crypto import Keyring, KeyringError, new_key_entry
from atrium.certificates.keys import ENCRYPTION_KEY_FILE, load_keyring, read_or_create_secret
from atrium.certificates.models import CertificateEvent
from atrium.certificates.outbox import OutboxWorker
from atrium.certificates.service import ReencryptStats, reencrypt_private_keys
from atrium.platform.db import create_engine, create_sessionmaker
from atrium.settings import get_settings


def _default_kid() -> str:
    return time.strftime("k%Y%m%d%H%M%S", time.gmtime())


@click.group()
def certificates() -> None:
    """Certificates: encryption keys and webhook delivery."""


@certificates.command("generate-key")
@click.option("--kid", default=None, help="Key id [default: kYYYYMMDDhhmmss].")
def generate_key(kid: str | None) -> None:
    """Print a new KID:BASE64KEY entry for ATRIUM_ENCRYPTION_KEY (nothing else on stdout)."""
    try:
        click.echo(new_key_entry(kid or _default_kid()))
    except KeyringError as exc:
        raise click.BadParameter(str(exc), param_hint="--kid") from exc


@certificates.command("rotate-key")
@click.option("--kid", default=None, help="Key id of the new key [default: kYYYYMMDDhhmmss].")
def rotate_key(kid: str | None) -> None:
    """Embedded default: put a new key first in DATA_DIR/encryption_key (old ones still decrypt).

    Restart the server so it encrypts with the new key, then run ``atrium certificates
    reencrypt``. With ATRIUM_ENCRYPTION_KEY set, edit that variable instead.
    """
    settings = get_settings()
    if settings.encryption_key is not None:
        raise click.ClickException(
            "ATRIUM_ENCRYPTION_KEY is set: put a new entry (atrium certificates generate-key) "
            "first in it, keep the old ones, restart, then run atrium certificates reencrypt"
        )
    path = settings.data_dir / ENCRYPTION_KEY_FILE
    current = Keyring.parse(read_or_create_secret(path, lambda: new_key_entry(_default_kid())))
    entry = new_key_entry(kid or _default_kid())
    new_kid = entry.partition(":")[0]
    if new_kid in current.key_ids:
        raise click.BadParameter(f"key id {new_kid!r} already exists", param_hint="--kid")
    old = path.read_text().strip()
    tmp = path.with_name(f".{path.name}.rotate")
    tmp.write_text(f"{entry},{old}\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    click.echo(
        f"new key {new_kid!r} encrypts from the next start; old keys still decrypt", err=True
    )
    click.echo("now restart the server and run: atrium certificates reencrypt", err=True)


async def _reencrypt(batch_size: int) -> ReencryptStats:
    settings = get_settings()
    keyring = load_keyring(settings)
    engine = create_engine(settings)

    def progress(stats: ReencryptStats) -> None:
        click.echo(f"re-encrypted {stats.reencrypted} private keys", err=True)

    try:
        return await reencrypt_private_keys(
            create_sessionmaker(engine), keyring, batch_size=batch_size, on_batch=progress
        )
    finally:
        await engine.dispose()


@certificates.command()
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
def reencrypt(batch_size: int) -> None:
    """Re-encrypt every private key with the current (first) key; safe to interrupt and rerun."""
    stats = asyncio.run(_reencrypt(batch_size))
    click.echo(
        f"done: {stats.reencrypted} private keys re-encrypted in {stats.batches} batches", err=True
    )


async def _deliver(wait: float) -> tuple[int, int, int]:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        worker = OutboxWorker(create_sessionmaker(engine), settings)
        try:
            stats = await worker.drain(max_wait=wait)
            pending = await worker.pending()
        finally:
            await worker.aclose()
    finally:
        await engine.dispose()
    return stats.delivered, stats.failed, pending


@certificates.command()
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Keep retrying failed deliveries for up to this many seconds.",
)
def deliver(wait: float) -> None:
    """Deliver pending certificate webhook events now (exit 1 if some remain pending)."""
    try:
        delivered, failed, pending = asyncio.run(_deliver(wait))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"delivered {delivered}, failed attempts {failed}, pending {pending}", err=True)
    if pending:
        raise SystemExit(1)


async def _outbox_status() -> tuple[int, int, str | None]:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            pending = CertificateEvent.delivered_at.is_(None)
            count = await session.scalar(select(func.count()).where(pending))
            attempts = await session.scalar(
                select(func.max(CertificateEvent.attempts)).where(pending)
            )
            error = await session.scalar(
                select(CertificateEvent.last_error)
                .where(pending, CertificateEvent.last_error.is_not(None))
                .order_by(CertificateEvent.id)
                .limit(1)
            )
    finally:
        await engine.dispose()
    return int(count or 0), int(attempts or 0), error


@certificates.command()
def outbox() -> None:
    """Show the webhook outbox: pending events, most attempts, oldest error."""
    count, attempts, error = asyncio.run(_outbox_status())
    click.echo(f"pending events: {count}")
    click.echo(f"most attempts of a pending event: {attempts}")
    click.echo(f"oldest error: {error or '-'}")
