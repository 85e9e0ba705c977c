"""What every key store does, and the one way a request's key is checked and counted."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from atrium.platform.apikeys.model import ApiKey, generate_key, hash_key, key_bucket
from atrium.platform.cache import Cache
from atrium.platform.ratelimit import Decision, Limiter

KeyCheck = tuple[ApiKey | None, Decision | None]
KeyCheckRead = tuple[ApiKey | None, Decision | None, bytes | None]


def admitted(record: ApiKey | None, decision: Decision | None) -> bool:
    """An active key whose request the limiter let through (or could not count)."""
    return record is not None and record.active and (decision is None or decision.allowed)


async def read_if_admitted(
    record: ApiKey | None,
    decision: Decision | None,
    cache: Cache | None,
    namespace: str,
    cache_key: str,
) -> bytes | None:
    """The cache entry a guarded read wants, once the key is known to be admitted."""
    if cache is None or not admitted(record, decision):
        return None
    try:
        _, value = await cache.backend.get_versioned(namespace, cache_key)
    except Exception:
        return None  # the route will try again and degrade to the database
    return value


class KeyStore(ABC):
    """Where keys live; every implementation stores hashes only."""

    async def create(
        self,
        owner: str,
        scopes: Sequence[str],
        rate_limit: int | None = None,
        key: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Store a new key (``key``, or a fresh random one); returns it, to show once, and its
        record."""
        key = key or generate_key()
        record = ApiKey.new(owner, scopes, rate_limit)
        await self.insert(hash_key(key), record)
        return key, record

    @abstractmethod
    async def insert(self, key_hash: str, record: ApiKey) -> None:
        """Store a new record under its key's hash."""

    @abstractmethod
    async def list(self) -> list[ApiKey]:
        """Every record, oldest first."""

    @abstractmethod
    async def revoke(self, key_id: str) -> ApiKey | None:
        """Mark a key revoked; ``None`` when no key has that id."""

    @abstractmethod
    async def lookup(self, key_hash: str) -> ApiKey | None:
        """The record of a key hash (no rate limiting)."""

    @abstractmethod
    async def warm(self) -> None:
        """Load what the per-request checks use (at start-up; failures are not fatal)."""

    @abstractmethod
    def reset(self) -> None:
        """Drop in-process state (tests)."""

    async def check(self, key_hash: str, limiter: Limiter, default_limit: int) -> KeyCheck:
        """The record and the rate-limit decision of one request with this key."""
        record, decision, _ = await self.check_and_read(key_hash, limiter, default_limit)
        return record, decision

    async def check_and_read(
        self,
        key_hash: str,
        limiter: Limiter,
        default_limit: int,
        cache: Cache | None = None,
        namespace: str = "",
        cache_key: str = "",
    ) -> KeyCheckRead:
        """:meth:`check`, plus the cache entry ``(namespace, cache_key)`` when admitted."""
        fused = await self.check_in_one_trip(
            key_hash, limiter, default_limit, cache, namespace, cache_key
        )
        if fused is not None:
            return fused
        record = await self.lookup(key_hash)
        if record is None or not record.active:
            return record, None, None
        decision = await limiter.hit(key_bucket(key_hash), record.rate_limit or default_limit)
        return (
            record,
            decision,
            await read_if_admitted(record, decision, cache, namespace, cache_key),
        )

    async def check_in_one_trip(
        self,
        key_hash: str,
        limiter: Limiter,
        default_limit: int,
        cache: Cache | None,
        namespace: str,
        cache_key: str,
    ) -> KeyCheckRead | None:
        """What :meth:`check_and_read` answers, in one round trip where the store can do that;
        ``None`` (the default) means: look up, then count, then read, one after the other."""
        return None
