"""Bearer tokens and password hashes.

Tokens are JWTs (RFC 7519) signed with HMAC-SHA256 (``HS256``) under ``ATRIUM_TOKEN_SECRET``,
made and checked by PyJWT: ``{"sub": "<user id>", "iat", "exp", "ver"}``. ``ver`` is the user's
token version, bumped on a password change, so a changed password revokes every token issued
before it (the service compares it with the user's on every request). Verification accepts
exactly HS256 (a token whose header says ``none``, ``HS512``, ``RS256`` … is refused before any
key is used), requires all four claims, and refuses a token that has expired or is not valid
yet (``nbf`` or ``iat`` in the future), allowing a few seconds of clock skew between replicas.

PyJWT spends a few hundred microseconds on one token (it re-checks the shape of the key and of
every base64 character each time), more than the rest of a ``GET /users/{id}``. A client sends
the same token on every request, so a token that passed is remembered, by its exact text, with
its claims (a bounded table): the next request with it only checks the expiry again. A forged
or altered token is a different text, so it never matches; a rejected one is never remembered.

Passwords are hashed with Argon2id (argon2-cffi defaults, RFC 9106's low-memory profile); the
work runs in a thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "iat", "exp", "ver")
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_SECRET_BYTES = 32
LEEWAY_SECONDS = 5  # clock skew between the replica that issued a token and the one checking it
MAX_TOKEN_LENGTH = 4096  # ours are ~150 characters; longer ones are refused unparsed
VERIFIED_CACHE_SIZE = 10_000

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the email is unknown, so a login takes as long either way.
    return _hasher.hash("atrium-no-such-user")


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or not valid yet."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token asserts."""

    user_id: int
    version: int
    expires_at: int


class TokenSigner:
    """Issues and verifies the API's bearer tokens."""

    def __init__(
        self,
        secret: bytes,
        ttl_seconds: int,
        *,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"an HS256 token secret needs at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._cache_size = cache_size
        self._clock = clock  # what re-checks a remembered token's expiry (PyJWT reads its own)
        self._verified: dict[str, TokenClaims] = {}

    def issue(self, user_id: int, version: int, now: float | None = None) -> str:
        """A token for ``user_id`` valid for the configured lifetime."""
        issued = int(time.time() if now is None else now)
        claims = {"sub": str(user_id), "iat": issued, "exp": issued + self.ttl_seconds}
        return jwt.encode({**claims, "ver": version}, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a genuine, currently valid token; :class:`InvalidTokenError` otherwise."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= self._cache_size:
                self._verified.pop(next(iter(self._verified)), None)  # the oldest
            self._verified[token] = claims
        elif claims.expires_at + LEEWAY_SECONDS <= self._clock():
            self._verified.pop(token, None)
            raise InvalidTokenError("token expired")
        return claims

    def _decode(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("token too long")
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": list(REQUIRED_CLAIMS)},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError(f"invalid token: {exc}") from exc
        version = payload["ver"]
        if type(version) is not int:
            raise InvalidTokenError("invalid token: ver is not an integer")
        try:
            user_id = int(payload["sub"])
        except (TypeError, ValueError) as exc:
            raise InvalidTokenError("invalid token: sub is not a user id") from exc
        return TokenClaims(user_id=user_id, version=version, expires_at=int(payload["exp"]))


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
