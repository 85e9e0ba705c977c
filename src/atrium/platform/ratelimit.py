"""Rate limiting with GCRA (the generic cell rate algorithm), in Redis or in-process.

GCRA keeps one number per bucket, the *theoretical arrival time* (TAT). A bucket allows
``limit`` requests per ``period`` with a burst of up to ``limit``: a request is admitted when
``TAT + interval - period <= now`` (``interval = period / limit``) and then moves TAT forward
by one interval. So a burst from an idle bucket gets exactly ``limit`` requests through, and
capacity then comes back smoothly (one request per interval), without the double burst a
fixed window allows at its boundary.

In Redis the whole check is one Lua script: it reads the clock of the Redis server (so the
clocks of the replicas do not matter), updates TAT and answers in one round trip, atomically,
which is what makes the limit hold across every process and replica sharing the Redis.
Times in the script are integers of microseconds.

When Redis cannot be reached the limiter fails open (admits without counting) or closed
(``ATRIUM_RATE_LIMIT_FAIL_OPEN=false``: 503), counts ``RATE_LIMIT_BACKEND_ERRORS``, warns at
most every few seconds, and stops calling Redis for a second after each failure (a tiny circuit
breaker) so an outage does not add a connection attempt to every request. It tries again by
itself, so service recovers when Redis does.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from atrium.platform.metrics import RATE_LIMIT_BACKEND_ERRORS
from atrium.platform.redis_scripts import PipelinedScripts, Script

log = logging.getLogger("atrium.ratelimit")

PERIOD_SECONDS = 60
_US = 1_000_000
BREAKER_SECONDS = 1.0
WARN_EVERY_SECONDS = 10.0

# GCRA on KEYS[1] with ARGV[1] = limit, ARGV[2] = period (µs).
# Returns {allowed (0/1), remaining, retry_after_us, reset_after_us}.
GCRA_LUA = """
local function gcra(key, limit, period)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - period
  -- 1 µs of tolerance absorbs the rounding of a non-integer interval
  if allow_at - now > 1 then
    return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
  end
  local reset = new_tat - now
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil(reset / 1000) + 1)
  local remaining = math.floor((period - reset) / interval + 0.000001)
  if remaining < 0 then remaining = 0 end
  return {1, remaining, 0, math.ceil(reset)}
end
"""

_HIT_LUA = (
    GCRA_LUA
    + """
return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one rate-limit check and what to tell the client about the bucket."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float = 0.0  # seconds until one request would be admitted (when refused)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``RateLimit-*`` (IETF draft) and, when refused, ``Retry-After``; whole seconds."""
        out = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(math.ceil(self.reset_after)).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        return out

    @classmethod
    def from_script(cls, limit: int, reply: Any) -> Decision:
        """Decode the ``{allowed, remaining, retry_after_us, reset_after_us}`` script reply."""
        allowed, remaining, retry_us, reset_us = (int(x) for x in reply[:4])
        return cls(bool(allowed), limit, remaining, reset_us / _US, retry_us / _US)


class LimiterUnavailable(Exception):
    """The shared limiter could not be asked and the configuration says fail closed."""


class Limiter(Protocol):
    """Checks (and counts) one request against a bucket."""

    async def hit(self, bucket: str, limit: int) -> Decision | None:
        """Count a request; ``None`` means "not limited" (backend down, failing open)."""

    def reset(self) -> None:
        """Forget every bucket (tests)."""


class MemoryLimiter:
    """GCRA in a dictionary: exact within one process (the embedded default)."""

    def __init__(self, period: float = PERIOD_SECONDS, max_buckets: int = 100_000) -> None:
        self.period = period
        self.max_buckets = max_buckets
        self._tat: OrderedDict[str, float] = OrderedDict()

    def check(self, bucket: str, limit: int, now: float | None = None) -> Decision:
        """Synchronous core (tests pass ``now``)."""
        now = time.monotonic() if now is None else now
        interval = self.period / limit
        tat = max(self._tat.get(bucket, now), now)
        new_tat = tat + interval
        allow_at = new_tat - self.period
        if allow_at - now > 1e-6:
            return Decision(False, limit, 0, tat - now, allow_at - now)
        self._tat[bucket] = new_tat
        self._tat.move_to_end(bucket)
        if len(self._tat) > self.max_buckets:
            self._evict(now)
        reset = new_tat - now
        remaining = max(0, math.floor((self.period - reset) / interval + 1e-6))
        return Decision(True, limit, remaining, reset)

    def _evict(self, now: float) -> None:
        # A bucket whose TAT has passed is full: forgetting it changes nothing.
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        while len(self._tat) > self.max_buckets:
            self._tat.popitem(last=False)

    async def hit(self, bucket: str, limit: int) -> Decision | None:
        """Count a request."""
        return self.check(bucket, limit)

    def reset(self) -> None:
        """Forget every bucket."""
        self._tat.clear()


class RedisHealth:
    """Shared by the Redis-backed platform parts: breaker, metric and throttled warning."""

    def __init__(self, fail_open: bool) -> None:
        self.fail_open = fail_open
        self._down_until = 0.0
        self._last_warning = -math.inf
        self.failures = 0

    @property
    def available(self) -> bool:
        """False for a moment after a failure (then the next call tries Redis again)."""
        return time.monotonic() >= self._down_until

    def failed(self, what: str, exc: BaseException) -> None:
        """Record a failed Redis call."""
        RATE_LIMIT_BACKEND_ERRORS.inc()
        self.failures += 1
        now = time.monotonic()
        self._down_until = now + BREAKER_SECONDS
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning(
                "redis unreachable; rate limiting %s",
                "suspended (fail open)" if self.fail_open else "refusing requests (fail closed)",
                extra={"during": what, "error": type(exc).__name__},
            )

    def recovered(self) -> None:
        """Record a successful call after failures."""
        if self.failures:
            self.failures = 0
            log.warning("redis reachable again; rate limiting restored")

    def unavailable(self) -> None:
        """Raise when failing closed; return (meaning "admit unlimited") when failing open."""
        if not self.fail_open:
            raise LimiterUnavailable


class RedisScripted:
    """What the Redis limiter and key store share: the client, the health record, and the one
    Lua script each runs per request (over the pipelined connection when there is one, see
    :mod:`atrium.platform.redis_scripts`, else through redis-py's client API).

    Subclasses name their script (``LUA``) and the part of the key space they own
    (``KEYSPACE``, after ``ATRIUM_REDIS_PREFIX``).
    """

    LUA: ClassVar[str]
    KEYSPACE: ClassVar[str]

    def __init__(
        self, redis: Any, prefix: str, health: RedisHealth, fast: PipelinedScripts | None = None
    ) -> None:
        self.redis = redis
        self.keyspace = prefix + self.KEYSPACE
        self.health = health
        self.fast = fast
        self._script = redis.register_script(self.LUA)
        self._fast_script = Script(self.LUA)

    async def run_script(self, what: str, keys: list[Any], args: list[Any]) -> Any:
        """The script's reply; ``None`` when Redis cannot be reached (the failure is recorded)."""
        if not self.health.available:
            return None
        try:
            if self.fast is not None:
                reply = await self.fast.run(self._fast_script, keys, args)
            else:
                reply = await self._script(keys=keys, args=args)
        except Exception as exc:
            self.health.failed(what, exc)
            return None
        self.health.recovered()
        return reply


class RedisLimiter(RedisScripted):
    """GCRA in Redis, one atomic script call per check, shared by every process."""

    LUA = _HIT_LUA
    KEYSPACE = "rl:"

    async def hit(self, bucket: str, limit: int) -> Decision | None:
        """Count a request in Redis; on failure see :class:`RedisHealth`."""
        reply = await self.run_script(
            "rate limit", [self.keyspace + bucket], [limit, PERIOD_SECONDS * _US]
        )
        if reply is None:
            self.health.unavailable()
            return None
        return Decision.from_script(limit, reply)

    def reset(self) -> None:
        """Buckets live in Redis under the prefix (tests delete them there)."""
