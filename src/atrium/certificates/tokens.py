"""Bearer tokens and password hashes.

Tokens are compact JWTs signed with HMAC-SHA256 (``HS256``) under ``ATRIUM_TOKEN_SECRET``:
``{"sub": "<user id>", "iat", "exp", "ver"}``. ``ver`` is the user's token version, bumped on a
password change, so a changed password revokes every token issued before it. Verification
accepts exactly HS256 (no ``alg`` games) and compares signatures in constant time.

Passwords are hashed with Argon2id (argon2-cffi defaults, RFC 9106's low-memory profile); the
work runs in a thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HEADER = (
    base64.urlsafe_b64encode(orjson.dumps({"alg": "HS256", "typ": "JWT"})).rstrip(b"=").decode()
)
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the email is unknown, so a login takes as long either way.
    return _hasher.hash("atrium-no-such-user")


class InvalidTokenError(Exception):
    """The token is malformed, forged or expired."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token asserts."""

    user_id: int
    version: int
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies the API's bearer tokens."""

    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest())

    def issue(self, user_id: int, version: int, now: float | None = None) -> str:
        """A token for ``user_id`` valid for the configured lifetime."""
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": str(user_id),
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "ver": version,
        }
        signing_input = f"{_HEADER}.{_b64(orjson.dumps(claims))}"
        return f"{signing_input}.{self._sign(signing_input)}"

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """The claims of a genuine, unexpired token; :class:`InvalidTokenError` otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidTokenError("malformed token")
        header, payload, signature = parts
        if not hmac.compare_digest(self._sign(f"{header}.{payload}"), signature):
            raise InvalidTokenError("bad signature")
        try:
            if orjson.loads(_unb64(header)).get("alg") != "HS256":
                raise InvalidTokenError("unexpected algorithm")
            claims = orjson.loads(_unb64(payload))
            user_id = int(claims["sub"])
            version = int(claims["ver"])
            expires_at = int(claims["exp"])
        except (binascii.Error, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidTokenError("malformed claims") from exc
        if expires_at <= (time.time() if now is None else now):
            raise InvalidTokenError("token expired")
        return TokenClaims(user_id=user_id, version=version, expires_at=expires_at)


async def hash_password(password: str) -> str:
    """Argon2id hash of ``password``."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; with no hash (unknown user) it still spends the time."""

    def _verify() -> bool:
        try:
            return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(_verify)


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)
