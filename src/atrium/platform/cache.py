"""Read-through cache that is never stale after a write, in Redis or in-process.

Coherence comes from *versioned namespaces*: every entry key embeds the namespace's current
version, and a write bumps that version after its transaction commits. A reader that raced
the write may still store the old value, but under the old version, which nobody reads again.
So once a write has returned, every process sharing the Redis sees the new data, without any
delete/set ordering subtleties. Entries also expire (``ATRIUM_CACHE_TTL_SECONDS``) so old
versions never pile up.

The in-process backend is only coherent inside one process: it is used for the embedded
single-process default; with several workers and no Redis the cache is disabled instead.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from atrium.platform.errors import ServiceUnavailable
from atrium.platform.metrics import CACHE_REQUESTS
from atrium.platform.redis_scripts import PipelinedScripts, Script
from atrium.settings import Settings

log = logging.getLogger("atrium.cache")

WARN_EVERY_SECONDS = 10.0
_last_warning = -1e9


def _warn(message: str, **extra: Any) -> None:
    # While Redis is down every request would log this; once per interval tells the story.
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY_SECONDS:
        _last_warning = now
        log.warning(message, extra=extra, exc_info=True)


T = TypeVar("T")

# One round trip for "current version + the entry under it".
_GET_VERSIONED = """
local version = redis.call('GET', KEYS[1]) or '0'
return {version, redis.call('GET', ARGV[1] .. version .. ARGV[2])}
"""


class CacheBackend(Protocol):
    """Storage of a versioned cache."""

    async def get_versioned(self, namespace: str, key: str) -> tuple[int, bytes | None]:
        """The namespace's current version and the entry stored under it, if any."""

    async def set(self, namespace: str, version: int, key: str, value: bytes, ttl: int) -> None:
        """Store an entry under ``version`` of ``namespace``."""

    async def bump(self, namespace: str) -> None:
        """Invalidate every entry of ``namespace`` at once."""


class NullBackend:
    """No caching at all (several processes without a shared Redis)."""

    async def get_versioned(self, namespace: str, key: str) -> tuple[int, bytes | None]:
        """Always a miss."""
        return 0, None

    async def set(self, namespace: str, version: int, key: str, value: bytes, ttl: int) -> None:
        """Store nothing."""

    async def bump(self, namespace: str) -> None:
        """Nothing to invalidate."""


class MemoryBackend:
    """Bounded LRU dictionary for a single process."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._versions: dict[str, int] = {}
        self._entries: OrderedDict[tuple[str, int, str], tuple[float, bytes]] = OrderedDict()

    async def get_versioned(self, namespace: str, key: str) -> tuple[int, bytes | None]:
        """Current version and live entry."""
        version = self._versions.get(namespace, 0)
        slot = (namespace, version, key)
        item = self._entries.get(slot)
        if item is None:
            return version, None
        expires, value = item
        if expires < time.monotonic():
            del self._entries[slot]
            return version, None
        self._entries.move_to_end(slot)
        return version, value

    async def set(self, namespace: str, version: int, key: str, value: bytes, ttl: int) -> None:
        """Store, evicting the least recently used entry when full."""
        if version != self._versions.get(namespace, 0):
            return  # a write happened meanwhile: this value may be older than it
        self._entries[(namespace, version, key)] = (time.monotonic() + ttl, value)
        self._entries.move_to_end((namespace, version, key))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def bump(self, namespace: str) -> None:
        """New version; old entries become unreachable and are dropped."""
        self._versions[namespace] = self._versions.get(namespace, 0) + 1
        for slot in [s for s in self._entries if s[0] == namespace]:
            del self._entries[slot]

    def clear(self) -> None:
        """Forget everything (tests wipe the tables underneath the cache)."""
        self._entries.clear()
        self._versions.clear()


class RedisBackend:
    """Shared by every process and replica using the same Redis."""

    def __init__(self, redis: Any, prefix: str = "") -> None:
        self.redis = redis
        self.prefix = f"{prefix}cache:"
        # Reads are on the hot path (a user's record on every certificates request): they go
        # pipelined, like the guard's script calls, rather than one pool checkout each.
        self._scripts = PipelinedScripts(redis)
        self._get = Script(_GET_VERSIONED)

    def version_key(self, namespace: str) -> str:
        """The Redis key of a namespace's version."""
        return f"{self.prefix}{namespace}:version"

    def entry_prefix(self, namespace: str) -> str:
        """Entries live at ``entry_prefix(ns) + version + ":" + key``."""
        return f"{self.prefix}{namespace}:v"

    async def get_versioned(self, namespace: str, key: str) -> tuple[int, bytes | None]:
        """Version and entry in one round trip (a Lua script)."""
        version, value = await self._scripts.run(
            self._get, [self.version_key(namespace)], [self.entry_prefix(namespace), f":{key}"]
        )
        return int(version), value

    async def set(self, namespace: str, version: int, key: str, value: bytes, ttl: int) -> None:
        """SET with expiry under the version read before loading."""
        await self.redis.set(f"{self.entry_prefix(namespace)}{version}:{key}", value, ex=ttl)

    async def bump(self, namespace: str) -> None:
        """INCR the namespace version (atomic across processes)."""
        await self.redis.incr(self.version_key(namespace))


class Cache:
    """Read-through cache over a backend; failures of the backend degrade to a miss."""

    def __init__(self, backend: CacheBackend, ttl: int, name: str = "default") -> None:
        self.backend = backend
        self.ttl = ttl
        self.name = name

    async def get_or_load(
        self,
        namespace: str,
        key: str,
        load: Callable[[], Awaitable[T | None]],
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
    ) -> T | None:
        """Return the cached value, or load it, cache it (unless ``None``) and return it."""
        try:
            version, raw = await self.backend.get_versioned(namespace, key)
        except Exception:  # a cache outage must never fail the request
            _warn("cache read failed", cache=self.name)
            return await load()
        if raw is not None:
            CACHE_REQUESTS.labels(self.name, "hit").inc()
            return decode(raw)
        CACHE_REQUESTS.labels(self.name, "miss").inc()
        value = await load()
        if value is not None:
            try:
                await self.backend.set(namespace, version, key, encode(value), self.ttl)
            except Exception:
                _warn("cache write failed", cache=self.name)
        return value

    async def invalidate(self, *namespaces: str) -> None:
        """Call after the write's transaction committed: readers then load fresh data.

        Bumping before the commit is not enough (a reader could cache the pre-commit row under
        the new version). A failed bump is reported as 503 rather than hidden, because the
        cache could otherwise serve the old value until its TTL.
        """
        for namespace in namespaces:
            try:
                await self.backend.bump(namespace)
            except Exception as exc:
                log.error(
                    "cache invalidation failed", extra={"namespace": namespace}, exc_info=True
                )
                raise ServiceUnavailable("cache invalidation failed; retry the request") from exc

    async def invalidate_after_commit(self, *namespaces: str) -> None:
        """The post-commit bump of a write that already bumped before committing.

        Writers bump before the commit (a failure there aborts the write: nothing is committed
        and nothing can go stale) and again after it (so a reader that loaded the old row during
        the commit cannot have cached it under the current version). When only this second bump
        fails the write has happened; reporting an error would make the client retry a write
        that succeeded, so it is logged instead.
        """
        for namespace in namespaces:
            try:
                await self.backend.bump(namespace)
            except Exception:
                log.error("cache invalidation after commit failed", extra={"namespace": namespace})

    def named(self, name: str) -> Cache:
        """The same storage under another metrics label (one per domain)."""
        return Cache(self.backend, self.ttl, name)

    def clear_local(self) -> None:
        """Forget in-process entries (tests); shared Redis entries are left alone."""
        if isinstance(self.backend, MemoryBackend):
            self.backend.clear()


def build_cache(settings: Settings, redis: Any) -> Cache:
    """The app's cache: Redis when configured, in-process for one process, else none.

    Several worker processes without Redis cannot invalidate each other's memory, so they
    do not cache at all rather than serve stale data.
    """
    backend: CacheBackend
    if redis is not None:
        backend = RedisBackend(redis, settings.redis_prefix)
    elif settings.workers > 1:
        backend = NullBackend()
    else:
        backend = MemoryBackend()
    return Cache(backend, settings.cache_ttl_seconds)
