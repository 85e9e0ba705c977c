"""Keys in the Redis hash ``{ATRIUM_REDIS_PREFIX}sec_apikeys`` (field = sha256 hex of the key,
value = JSON with id, owner, scopes, rate-limit override, created, revoked), where existing
deployments keep them.

The request's one rate-limit script also does the ``HGET`` (see :mod:`atrium.platform.guard`),
so a new key works and a revocation is effective on the very next request, on every replica. A
snapshot of the hash, refreshed in the background, lets known keys keep working while Redis is
unreachable (nobody can revoke a key then either: revocations go through Redis).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from atrium.platform.apikeys.model import ApiKey, key_bucket, now_iso
from atrium.platform.apikeys.snapshot import KeySnapshot
from atrium.platform.apikeys.store import KeyCheckRead, KeyStore, read_if_admitted
from atrium.platform.cache import Cache, RedisBackend
from atrium.platform.ratelimit import (
    GCRA_LUA,
    PERIOD_SECONDS,
    Decision,
    Limiter,
    RedisHealth,
    RedisLimiter,
    RedisScripted,
)
from atrium.platform.redis_scripts import PipelinedScripts

log = logging.getLogger("atrium.apikeys")

REDIS_HASH = "sec_apikeys"
SNAPSHOT_REFRESH_SECONDS = 5.0

# One round trip per request: the key's record and its rate-limit bucket together.
# KEYS[1] = the hash, KEYS[2] = the key's bucket; ARGV = field, default limit, period (µs).
# Returns {-1} (unknown), {-2, record} (revoked) or {allowed, remaining, retry_us, reset_us,
# limit, record[, cached entry]}.
_CHECK_KEY_LUA = (
    GCRA_LUA
    + """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return {-1} end
local limit = tonumber(ARGV[2])
local ok, data = pcall(cjson.decode, record)
if ok and type(data) == 'table' then
  local revoked = data['revoked']
  if revoked ~= nil and revoked ~= cjson.null and revoked ~= false and revoked ~= '' then
    return {-2, record}
  end
  local override = tonumber(data['rate_limit'])
  if override and override >= 1 then limit = math.floor(override) end
end
local r = gcra(KEYS[2], limit, tonumber(ARGV[3]))
if r[1] == 1 and #KEYS >= 3 then
  -- a cached read in the same round trip: KEYS[3] = the namespace's version key,
  -- ARGV[4] .. version .. ARGV[5] = the entry
  local version = redis.call('GET', KEYS[3]) or '0'
  return {r[1], r[2], r[3], r[4], limit, record, redis.call('GET', ARGV[4] .. version .. ARGV[5])}
end
return {r[1], r[2], r[3], r[4], limit, record}
"""
)


class RedisKeyStore(RedisScripted, KeyStore):
    """Keys in the Redis hash ``sec_apikeys`` (field = sha256 of the key)."""

    LUA = _CHECK_KEY_LUA
    KEYSPACE = REDIS_HASH

    def __init__(
        self, redis: Any, prefix: str, health: RedisHealth, fast: PipelinedScripts | None = None
    ) -> None:
        super().__init__(redis, prefix, health, fast)
        self.snapshot = KeySnapshot(self._load_all, SNAPSHOT_REFRESH_SECONDS)
        self._parsed: dict[bytes, ApiKey] = {}

    def _parse(self, raw: bytes, key_hash: str) -> ApiKey:
        # Parsing the same few values on every request is waste; the dict stays tiny.
        record = self._parsed.get(raw)
        if record is None:
            if len(self._parsed) > 10_000:
                self._parsed.clear()
            record = self._parsed[raw] = ApiKey.from_json(raw, key_hash)
        return record

    async def _items(self) -> list[tuple[str, ApiKey]]:
        values = await self.redis.hgetall(self.keyspace)
        items = []
        for k, v in values.items():
            field_name = k.decode() if isinstance(k, bytes) else str(k)
            items.append((field_name, ApiKey.from_json(v, field_name)))
        return items

    async def _load_all(self) -> dict[str, ApiKey]:
        return dict(await self._items())

    async def lookup(self, key_hash: str) -> ApiKey | None:
        """One HGET; the snapshot when Redis is unreachable."""
        if self.health.available:
            try:
                raw = await self.redis.hget(self.keyspace, key_hash)
            except Exception as exc:
                self.health.failed("api key lookup", exc)
            else:
                return None if raw is None else self._parse(raw, key_hash)
        return self.snapshot.get(key_hash)

    async def check_in_one_trip(
        self,
        key_hash: str,
        limiter: Limiter,
        default_limit: int,
        cache: Cache | None,
        namespace: str,
        cache_key: str,
    ) -> KeyCheckRead | None:
        """Record, bucket and, when the cache is Redis too, the entry: one script call."""
        self.snapshot.refresh_if_stale()
        if not isinstance(limiter, RedisLimiter):  # not how the app wires it, but be correct
            return None
        keys = [self.keyspace, limiter.keyspace + key_bucket(key_hash)]
        args: list[Any] = [key_hash, default_limit, PERIOD_SECONDS * 1_000_000]
        backend = cache.backend if cache is not None else None
        fused_read = isinstance(backend, RedisBackend)
        if isinstance(backend, RedisBackend):
            keys.append(backend.version_key(namespace))
            args += [backend.entry_prefix(namespace), f":{cache_key}"]
        reply = await self.run_script("api key check", keys, args)
        if reply is None:
            # Redis unreachable: known keys keep working (or 503 when failing closed).
            self.health.unavailable()
            return self.snapshot.get(key_hash), None, None
        code = int(reply[0])
        if code == -1:
            return None, None, None
        if code == -2:
            return self._parse(reply[1], key_hash), None, None
        record = self._parse(reply[5], key_hash)
        decision = Decision.from_script(int(reply[4]), reply)
        if fused_read:
            return record, decision, reply[6] if len(reply) > 6 else None
        return (
            record,
            decision,
            await read_if_admitted(record, decision, cache, namespace, cache_key),
        )

    async def insert(self, key_hash: str, record: ApiKey) -> None:
        """HSET the record under the key's hash."""
        await self.redis.hset(self.keyspace, key_hash, record.to_json())
        self.snapshot.put(key_hash, record)

    async def list(self) -> list[ApiKey]:
        """Every record, oldest first."""
        return sorted((r for _, r in await self._items()), key=lambda r: (r.created, r.id))

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Rewrite the record with ``revoked`` set (the next request with it gets 401)."""
        for field_name, record in await self._items():
            if record.id == key_id:
                if record.active:
                    record = replace(record, revoked=now_iso())
                    await self.redis.hset(self.keyspace, field_name, record.to_json())
                self.snapshot.put(field_name, record)
                return record
        return None

    async def warm(self) -> None:
        """Take the first snapshot (at start-up)."""
        await self.snapshot.quiet_reload()

    def reset(self) -> None:
        """Forget the snapshot."""
        self.snapshot.clear()
        self._parsed = {}
