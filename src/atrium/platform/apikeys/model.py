"""What an API key is: its record, its scopes, the caller it makes, how it is made and hashed."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from atrium.settings import Settings

HEADER = "X-API-KEY"
KEY_PREFIX = "atr_"
ADMIN = "admin"
SCOPES: tuple[str, ...] = (
    "templates:read",
    "templates:write",
    "hr:read",
    "hr:write",
    "market:read",
    ADMIN,
)


def generate_key() -> str:
    """A new random key (256 bits, URL-safe); the only moment it exists in clear."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What is stored and looked up: the SHA-256 hex digest of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_bucket(key_hash: str) -> str:
    """The rate-limit bucket of a key (a prefix of its hash: never the key itself)."""
    return "key:" + key_hash[:32]


def validate_scopes(scopes: Iterable[str], extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Normalise a scope list, refusing scopes nothing checks (a typo would grant nothing)."""
    allowed = set(SCOPES) | {s for s in extra if s}
    out: list[str] = []
    for scope in scopes:
        scope = scope.strip()
        if not scope:
            continue
        if scope not in allowed:
            raise ValueError(f"unknown scope {scope!r}; known: {', '.join(sorted(allowed))}")
        if scope not in out:
            out.append(scope)
    if not out:
        raise ValueError("at least one scope is needed")
    return tuple(out)


def iso(value: datetime) -> str:
    """A timestamp as records show it: UTC, whole seconds, ``Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_iso() -> str:
    """The current time as records show it."""
    return iso(datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key's record (never the key itself)."""

    id: str
    owner: str
    scopes: tuple[str, ...]
    rate_limit: int | None = None
    created: str = ""
    revoked: str | None = None

    @classmethod
    def new(cls, owner: str, scopes: Sequence[str], rate_limit: int | None) -> ApiKey:
        """The record of a key being created now."""
        return cls(
            id=secrets.token_hex(8),
            owner=owner,
            scopes=tuple(scopes),
            rate_limit=rate_limit,
            created=now_iso(),
        )

    @property
    def active(self) -> bool:
        """False once revoked."""
        return not self.revoked

    def principal(self) -> Principal:
        """Who a request carrying this key acts as."""
        return Principal(self.id, self.owner, frozenset(self.scopes), self.rate_limit)

    def to_json(self) -> bytes:
        """The Redis hash value."""
        return orjson.dumps(
            {
                "id": self.id,
                "owner": self.owner,
                "scopes": list(self.scopes),
                "rate_limit": self.rate_limit,
                "created": self.created,
                "revoked": self.revoked,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str, key_hash: str) -> ApiKey:
        """Parse a hash value leniently: older deployments wrote fewer fields."""
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            data = {"owner": text}
        scopes_raw = data.get("scopes") or []
        if isinstance(scopes_raw, str):
            scopes_raw = scopes_raw.replace(" ", ",").split(",")
        scopes = tuple(str(s).strip() for s in scopes_raw if str(s).strip())
        rate_limit: int | None = None
        try:
            if data.get("rate_limit") is not None and int(data["rate_limit"]) >= 1:
                rate_limit = int(data["rate_limit"])
        except (TypeError, ValueError):
            rate_limit = None
        revoked = data.get("revoked")
        return cls(
            id=str(data.get("id") or key_hash[:16]),
            owner=str(data.get("owner") or data.get("name") or ""),
            scopes=scopes,
            rate_limit=rate_limit,
            created=str(data.get("created") or ""),
            revoked=str(revoked) if revoked not in (None, False, "") else None,
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a key's owner and scopes, or anonymous with the anonymous scopes."""

    key_id: str | None
    owner: str | None
    scopes: frozenset[str] = field(default_factory=frozenset)
    rate_limit: int | None = None

    @property
    def anonymous(self) -> bool:
        """True when the request carried no key."""
        return self.key_id is None

    def allows(self, scope: str) -> bool:
        """``admin`` implies every scope."""
        return scope in self.scopes or ADMIN in self.scopes


def anonymous_principal(settings: Settings) -> Principal:
    """What a request without a key may do (``ATRIUM_ANONYMOUS_SCOPES``)."""
    return Principal(None, None, frozenset(settings.anonymous_scopes))
