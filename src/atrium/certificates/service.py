"""The rules of the certificates domain: users, login, certificates, caching, events.

Services never commit: they register after-commit work (cache invalidation, waking the webhook
worker) with :func:`atrium.platform.db.after_commit`, which whoever commits runs.

Cache layout (namespaces of the shared versioned cache, see :mod:`atrium.platform.cache`):
``certificates:user:<id>`` holds the user's public fields and token version (used by every
authenticated request), ``certificates:list:<id>`` the user's certificate pages and single
certificates. A write bumps the namespaces it touched after its commit. Cache loads run in a
session of their own, so they read data committed after the version was read (a long-lived
request snapshot, as SQLite keeps one per transaction, could otherwise be cached as new).
Private keys are never cached.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atrium.certificates.crypto import DecryptionError, Keyring, certificate_aad
from atrium.certificates.models import Certificate, User
from atrium.certificates.outbox import record_change, utcnow
from atrium.certificates.schemas import CertificateCreate, UserCreate, UserUpdate
from atrium.certificates.tokens import (
    InvalidTokenError,
    TokenSigner,
    hash_password,
    needs_rehash,
    verify_password,
)
from atrium.platform.cache import Cache
from atrium.platform.db import after_commit
from atrium.platform.errors import AtriumError, Conflict, NotFound, Unauthorized
from atrium.platform.sql import update_returning

log = logging.getLogger("atrium.certificates")

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
INVALID_TOKEN_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class EmailTaken(Conflict):
    slug, title = "email-taken", "Email already registered"


class PrivateKeyUnavailable(AtriumError):
    status, slug, title = 500, "private-key-unavailable", "Private key cannot be decrypted"


class UserView(TypedDict):
    """What the cache keeps about a user (no password hash)."""

    id: int
    name: str
    email: str
    token_version: int


class CertificateView(TypedDict):
    """One certificate without its private key."""

    id: int
    user_id: int
    active: bool
    body: str


@dataclass
class CertificatesContext:
    """What the domain's services need beside a session; built once per application."""

    sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    keyring: Keyring
    tokens: TokenSigner
    # Called after a commit that wrote outbox events (wakes the delivery worker).
    events_committed: Callable[[], Awaitable[None]] | None = None


def user_namespace(user_id: int) -> str:
    """Cache namespace of a user's own record."""
    return f"certificates:user:{user_id}"


def list_namespace(user_id: int) -> str:
    """Cache namespace of a user's certificates."""
    return f"certificates:list:{user_id}"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _user_view(raw: bytes) -> UserView:
    data = orjson.loads(raw)
    return UserView(
        id=data["id"], name=data["name"], email=data["email"], token_version=data["token_version"]
    )


def _certificate_view(raw: bytes) -> CertificateView:
    data = orjson.loads(raw)
    return CertificateView(
        id=data["id"], user_id=data["user_id"], active=data["active"], body=data["body"]
    )


def _page(raw: bytes) -> dict[str, Any]:
    page: dict[str, Any] = orjson.loads(raw)
    return page


def email_key(email: str) -> str:
    """The comparison form of an address: case-insensitive, as people expect of emails."""
    return email.strip().lower()


def _invalidate(session: AsyncSession, ctx: CertificatesContext, *namespaces: str) -> None:
    async def bump() -> None:
        await ctx.cache.invalidate(*namespaces)

    after_commit(session, bump)


async def _flush_unique(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise EmailTaken("a user with this email already exists") from exc


# --- users ---------------------------------------------------------------------------------


async def create_user(session: AsyncSession, ctx: CertificatesContext, data: UserCreate) -> User:
    """Register a user; 409 when the email (ignoring case) is taken."""
    key = email_key(data.email)
    if await session.scalar(select(User.id).where(User.email_key == key)) is not None:
        raise EmailTaken("a user with this email already exists")
    user = User(
        name=data.name,
        email=data.email,
        email_key=key,
        password_hash=await hash_password(data.password.get_secret_value()),
        token_version=0,
    )
    session.add(user)
    await _flush_unique(session)  # a concurrent registration may have won the race
    _invalidate(session, ctx, user_namespace(user.id), list_namespace(user.id))
    return user


async def get_user(ctx: CertificatesContext, user_id: int) -> UserView:
    """A user through the cache; 404 when there is none."""

    async def load() -> UserView | None:
        async with ctx.sessionmaker() as fresh:
            row = (
                await fresh.execute(
                    select(User.id, User.name, User.email, User.token_version).where(
                        User.id == user_id
                    )
                )
            ).first()
        if row is None:
            return None
        return UserView(id=row[0], name=row[1], email=row[2], token_version=row[3])

    user: UserView | None = await ctx.cache.get_or_load(
        user_namespace(user_id), "v1", load, _dumps, _user_view
    )
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


async def update_user(
    session: AsyncSession, ctx: CertificatesContext, user_id: int, data: UserUpdate
) -> UserView:
    """Change name, email or password; a new password revokes the user's tokens.

    One UPDATE … RETURNING (on MySQL: the UPDATE, then a read of the row it locked), no read
    before it: a user deleted by a concurrent request is simply not matched (404), whatever
    the engine's locking, and a taken email is the unique index's verdict (409), even when
    two requests claim the same address at once.
    """
    values: dict[str, Any] = {"updated_at": utcnow()}
    if data.name is not None:
        values["name"] = data.name
    if data.email is not None:
        values["email"], values["email_key"] = data.email, email_key(data.email)
    if data.password is not None:
        values["password_hash"] = await hash_password(data.password.get_secret_value())
        values["token_version"] = User.token_version + 1
    try:
        rows = await update_returning(
            session,
            update(User).where(User.id == user_id).values(values),
            (User.id, User.name, User.email, User.token_version),
            reread=(User.id == user_id,),
        )
    except IntegrityError as exc:
        raise EmailTaken("a user with this email already exists") from exc
    if not rows:
        raise NotFound(f"user {user_id} does not exist")
    row = rows[0]
    _invalidate(session, ctx, user_namespace(user_id))
    return UserView(id=row[0], name=row[1], email=row[2], token_version=row[3])


async def delete_user(session: AsyncSession, ctx: CertificatesContext, user_id: int) -> None:
    """Delete a user and all of their certificates."""
    # Explicit, not only ON DELETE CASCADE: it holds even where foreign keys are off.
    await session.execute(delete(Certificate).where(Certificate.user_id == user_id))
    result = await session.execute(delete(User).where(User.id == user_id))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"user {user_id} does not exist")
    _invalidate(session, ctx, user_namespace(user_id), list_namespace(user_id))


# --- authentication --------------------------------------------------------------------------


async def login(session: AsyncSession, ctx: CertificatesContext, email: str, password: str) -> str:
    """A bearer token for valid credentials; 401 (the same for both mistakes) otherwise."""
    user = None
    if "\x00" not in email and len(email) <= 320:
        user = await session.scalar(select(User).where(User.email_key == email_key(email)))
    ok = await verify_password(user.password_hash if user else None, password[:1024])
    if user is None or not ok or len(password) > 1024:
        raise Unauthorized("incorrect email or password", headers=BEARER_CHALLENGE)
    if needs_rehash(user.password_hash):
        # A statement, not a change to the loaded object: a user deleted (or whose password
        # changed) meanwhile is simply not matched, instead of failing the flush.
        await session.execute(
            update(User)
            .where(User.id == user.id, User.password_hash == user.password_hash)
            .values(password_hash=await hash_password(password))
            .execution_options(synchronize_session=False)
        )
    return ctx.tokens.issue(user.id, user.token_version)


async def user_from_token(ctx: CertificatesContext, token: str) -> UserView:
    """The user a bearer token stands for; 401 when it is invalid, expired or revoked."""
    try:
        claims = ctx.tokens.verify(token)
    except InvalidTokenError as exc:
        raise Unauthorized(
            "invalid or expired bearer token", headers=INVALID_TOKEN_CHALLENGE
        ) from exc
    try:
        user = await get_user(ctx, claims.user_id)
    except NotFound:
        user = None
    if user is None or user["token_version"] != claims.version:
        raise Unauthorized("bearer token was revoked", headers=INVALID_TOKEN_CHALLENGE)
    return user


# --- certificates ----------------------------------------------------------------------------


async def create_certificate(
    session: AsyncSession, ctx: CertificatesContext, user_id: int, data: CertificateCreate
) -> Certificate:
    """Store a certificate; its private key only encrypted, bound to the new row."""
    if await session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    certificate = Certificate(
        user_id=user_id, body=data.body, active=data.active, private_key_encrypted=""
    )
    session.add(certificate)
    try:
        await session.flush()  # the id goes into the associated data
    except IntegrityError as exc:  # the user was deleted meanwhile
        raise NotFound(f"user {user_id} does not exist") from exc
    certificate.private_key_encrypted = ctx.keyring.encrypt(
        base64.b64decode(data.private_key), certificate_aad(certificate.id, user_id)
    )
    await session.flush()
    _invalidate(session, ctx, list_namespace(user_id))
    return certificate


async def list_certificates(
    ctx: CertificatesContext, user_id: int, active: bool | None, limit: int, offset: int
) -> dict[str, Any]:
    """One page of the user's certificates, optionally only (in)active ones, through the cache."""

    async def load() -> dict[str, Any]:
        condition = [Certificate.user_id == user_id]
        if active is not None:
            condition.append(Certificate.active.is_(active))
        async with ctx.sessionmaker() as fresh:
            total = await fresh.scalar(select(func.count()).where(*condition))
            rows = (
                await fresh.execute(
                    select(Certificate.id, Certificate.active, Certificate.body)
                    .where(*condition)
                    .order_by(Certificate.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return {
            "items": [{"id": r[0], "active": r[1], "body": r[2]} for r in rows],
            "total": int(total or 0),
            "limit": limit,
            "offset": offset,
        }

    key = f"page:{'all' if active is None else int(active)}:{limit}:{offset}"
    page: dict[str, Any] | None = await ctx.cache.get_or_load(
        list_namespace(user_id), key, load, _dumps, _page
    )
    assert page is not None
    return page


async def get_certificate(
    ctx: CertificatesContext, user_id: int, certificate_id: int
) -> CertificateView:
    """One certificate of the user, through the cache; 404 when the user has no such one."""

    async def load() -> CertificateView | None:
        async with ctx.sessionmaker() as fresh:
            row = (
                await fresh.execute(
                    select(Certificate.active, Certificate.body).where(
                        Certificate.id == certificate_id, Certificate.user_id == user_id
                    )
                )
            ).first()
        if row is None:
            return None
        return CertificateView(id=certificate_id, user_id=user_id, active=row[0], body=row[1])

    found: CertificateView | None = await ctx.cache.get_or_load(
        list_namespace(user_id),
        f"one:{certificate_id}",
        load,
        _dumps,
        _certificate_view,
    )
    if found is None:
        raise NotFound(f"certificate {certificate_id} does not exist")
    return found


async def get_private_key(
    session: AsyncSession, ctx: CertificatesContext, user_id: int, certificate_id: int
) -> str:
    """The decrypted private key, base64 encoded as it was uploaded (never cached)."""
    stored = await session.scalar(
        select(Certificate.private_key_encrypted).where(
            Certificate.id == certificate_id, Certificate.user_id == user_id
        )
    )
    if stored is None:
        raise NotFound(f"certificate {certificate_id} does not exist")
    try:
        plaintext = ctx.keyring.decrypt(stored, certificate_aad(certificate_id, user_id))
    except DecryptionError as exc:
        log.error(
            "private key does not decrypt",
            extra={"certificate_id": certificate_id, "key_id": Keyring.key_id_of(stored)},
        )
        raise PrivateKeyUnavailable(
            "the stored private key cannot be decrypted with the configured keys"
        ) from exc
    return base64.b64encode(plaintext).decode()


async def set_active(
    session: AsyncSession,
    ctx: CertificatesContext,
    user_id: int,
    certificate_id: int,
    active: bool,
) -> CertificateView:
    """Activate or deactivate; a real change writes its webhook event in the same transaction."""
    now = utcnow()
    # Conditional UPDATE: of concurrent identical requests only one sees a change (PostgreSQL
    # re-checks the WHERE after the row lock), so one change means one event.
    changed = await update_returning(
        session,
        update(Certificate)
        .where(
            Certificate.id == certificate_id,
            Certificate.user_id == user_id,
            Certificate.active.is_not(active),
        )
        .values(active=active, updated_at=now),
        (Certificate.body,),
        reread=(Certificate.id == certificate_id,),
    )
    row = changed[0] if changed else None
    if row is not None:
        record_change(
            session,
            certificate_id=certificate_id,
            user_id=user_id,
            active=active,
            changed_at=now,
        )
        _invalidate(session, ctx, list_namespace(user_id))
        if ctx.events_committed is not None:
            after_commit(session, ctx.events_committed)
        return CertificateView(id=certificate_id, user_id=user_id, active=active, body=row[0])
    body = await session.scalar(
        select(Certificate.body).where(
            Certificate.id == certificate_id, Certificate.user_id == user_id
        )
    )
    if body is None:
        raise NotFound(f"certificate {certificate_id} does not exist")
    return CertificateView(id=certificate_id, user_id=user_id, active=active, body=body)


async def delete_certificate(
    session: AsyncSession, ctx: CertificatesContext, user_id: int, certificate_id: int
) -> None:
    """Delete one certificate of the user."""
    result = await session.execute(
        delete(Certificate).where(Certificate.id == certificate_id, Certificate.user_id == user_id)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"certificate {certificate_id} does not exist")
    _invalidate(session, ctx, list_namespace(user_id))


# --- key rotation ----------------------------------------------------------------------------


@dataclass
class ReencryptStats:
    """What a re-encryption run did."""

    reencrypted: int = 0
    batches: int = 0


async def reencrypt_private_keys(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: Keyring,
    *,
    batch_size: int = 500,
    on_batch: Callable[[ReencryptStats], None] | None = None,
) -> ReencryptStats:
    """Re-encrypt every private key not under the current key, one transaction per batch.

    Resumable: an interrupted run leaves whole batches done, and the next run only selects
    values that still name an old key.
    """
    stats = ReencryptStats()
    prefix = f"{keyring.current}:"
    last_id = 0
    while True:
        async with sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    select(Certificate.id, Certificate.user_id, Certificate.private_key_encrypted)
                    .where(
                        Certificate.id > last_id,
                        ~Certificate.private_key_encrypted.startswith(prefix, autoescape=True),
                    )
                    .order_by(Certificate.id)
                    .limit(batch_size)
                    .with_for_update()
                )
            ).all()
            if not rows:
                return stats
            changes = []
            for certificate_id, user_id, stored in rows:
                aad = certificate_aad(certificate_id, user_id)
                try:
                    plaintext = keyring.decrypt(stored, aad)
                except DecryptionError as exc:
                    raise DecryptionError(
                        f"certificate {certificate_id}: {exc} "
                        f"(key id {Keyring.key_id_of(stored)!r}); nothing of this batch changed"
                    ) from exc
                changes.append(
                    {"id": certificate_id, "private_key_encrypted": keyring.encrypt(plaintext, aad)}
                )
            await session.execute(update(Certificate), changes)
        last_id = rows[-1][0]
        stats.reencrypted += len(rows)
        stats.batches += 1
        if on_batch is not None:
            on_batch(stats)
