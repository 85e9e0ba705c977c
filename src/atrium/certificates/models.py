"""Tables of the certificates domain: users, their certificates, and the notification outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from atrium.platform.db import Base
from atrium.platform.sqltypes import BigIntPK, LongText, UtcDateTime, server_now


class User(Base):
    """Someone who owns certificates and logs in with email + password."""

    __tablename__ = "users"
    # AUTOINCREMENT: SQLite would otherwise reuse the highest deleted id, and a token of a
    # deleted user must never authenticate whoever registers next.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased address: uniqueness and login ignore case, the address is shown as given.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # Bumped when the password changes: tokens carry it, so older tokens stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_now())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_now())


class Certificate(Base):
    """A certificate body and its private key, which is stored only encrypted."""

    __tablename__ = "certificates"
    __table_args__ = (
        Index("ix_certificates_user_id_active", "user_id", "active"),
        {"sqlite_autoincrement": True},  # ids named in webhooks are never reused
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(LongText)
    active: Mapped[bool] = mapped_column(Boolean)
    # ``<key id>:<base64(nonce || AES-GCM ciphertext+tag)>``; never the plaintext.
    private_key_encrypted: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_now())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_now())


class CertificateEvent(Base):
    """Outbox row: one (de)activation to POST to the webhook, written with the change itself.

    No foreign key to ``certificates``: a deactivation must still be announced after the
    certificate (or its user) is deleted.
    """

    __tablename__ = "certificate_events"
    __table_args__ = (
        # The worker's scan: pending events, oldest first per certificate.
        Index(
            "ix_certificate_events_pending",
            "certificate_id",
            "id",
            postgresql_where=text("delivered_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The exact JSON bytes POSTed (and signed), fixed when the change is made.
    payload: Mapped[str] = mapped_column(LongText)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    last_error: Mapped[str | None] = mapped_column(LongText, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
