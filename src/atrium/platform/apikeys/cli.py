"""``atrium apikeys create|list|revoke`` and the embedded default's first admin key."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from atrium.platform.apikeys import ADMIN, SCOPES, KeyStore, build_key_store, validate_scopes
from atrium.platform.db import create_engine
from atrium.platform.logging import configure_logging
from atrium.platform.migrate import upgrade
from atrium.platform.ratelimit import RedisHealth
from atrium.settings import Settings, get_settings

log = logging.getLogger("atrium.apikeys")

T = TypeVar("T")


async def with_key_store(settings: Settings, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    """Run ``action`` against the store the server uses (Redis hash or SQL table)."""
    engine = create_engine(settings)
    redis: Any = None
    try:
        if settings.redis_url:
            from redis.asyncio import Redis

            redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5.0)
        elif settings.should_auto_migrate:
            await upgrade(engine)  # the embedded default may not have started yet
        store = build_key_store(settings, engine, redis, RedisHealth(fail_open=True))
        return await action(store)
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


async def bootstrap_admin_key(settings: Settings) -> str | None:
    """On the embedded default's first start (no key at all), create an admin key.

    Returns the key so that the caller shows it once; ``None`` when keys exist already.
    """
    if not settings.is_embedded:
        return None

    async def action(store: KeyStore) -> str | None:
        if await store.list():
            return None
        configure_logging(settings.log_level, json=settings.log_json)
        key, record = await store.create("bootstrap-admin", (ADMIN,))
        log.info("created the first admin API key", extra={"key_id": record.id})
        return key

    return await with_key_store(settings, action)


def print_bootstrap_key(key: str, saved_to: Path | None = None) -> None:
    """The one time a key is shown: stdout, clearly marked, at first start."""
    line = "=" * 78
    kept = (
        f"It is also kept in {saved_to} (mode 0600), where `atrium demo` finds it.\n"
        if saved_to is not None
        else ""
    )
    sys.stdout.write(
        f"{line}\n"
        "ATRIUM FIRST START: an admin API key was created. It is shown only this once;\n"
        "store it now (create more with `atrium apikeys create`):\n\n"
        f"    X-API-KEY: {key}\n\n"
        f"{kept}"
        f"{line}\n"
    )
    sys.stdout.flush()


@click.group()
def apikeys() -> None:
    """Create, list and revoke API keys (stored hashed: a key is shown only when created)."""


@apikeys.command()
@click.option("--owner", required=True, help="Who the key is for (shown in listings).")
@click.option(
    "--scopes",
    required=True,
    help=f"Comma-separated scopes: {', '.join(SCOPES)} (admin implies all).",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Requests per minute for this key [default: ATRIUM_RATE_LIMIT].",
)
def create(owner: str, scopes: str, rate_limit: int | None) -> None:
    """Create a key and print it, and nothing else (`KEY=$(atrium apikeys create …)`)."""
    settings = get_settings()
    try:
        wanted = validate_scopes(scopes.split(","), extra=[settings.metrics_scope or ""])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from exc
    if not owner.strip():
        raise click.BadParameter("must not be empty", param_hint="--owner")

    async def action(store: KeyStore) -> str:
        key, _ = await store.create(owner.strip(), wanted, rate_limit)
        return key

    click.echo(asyncio.run(with_key_store(settings, action)))


@apikeys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_keys(as_json: bool) -> None:
    """List keys (ids, owners, scopes; never the keys themselves)."""
    records = asyncio.run(with_key_store(get_settings(), lambda store: store.list()))
    if as_json:
        for record in records:
            click.echo(
                orjson.dumps(
                    {
                        "id": record.id,
                        "owner": record.owner,
                        "scopes": list(record.scopes),
                        "rate_limit": record.rate_limit,
                        "created": record.created,
                        "revoked": record.revoked,
                    }
                ).decode()
            )
        return
    click.echo(f"{'ID':<18} {'OWNER':<20} {'SCOPES':<40} {'LIMIT':>6}  {'CREATED':<20}  STATUS")
    for record in records:
        status = f"revoked {record.revoked}" if record.revoked else "active"
        limit = str(record.rate_limit) if record.rate_limit else "-"
        click.echo(
            f"{record.id:<18} {record.owner[:20]:<20} {','.join(record.scopes)[:40]:<40} "
            f"{limit:>6}  {record.created:<20}  {status}"
        )


@apikeys.command()
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke the key with this id (requests with it get 401 from now on)."""
    record = asyncio.run(with_key_store(get_settings(), lambda store: store.revoke(key_id)))
    if record is None:
        raise click.ClickException(f"no API key with id {key_id!r}")
    click.echo(f"revoked key {record.id} of {record.owner}", err=True)
