"""The shared cache backend: ``RedisStore``, answers in Redis for several gateway processes.

A module of its own, imported only for ``state: redis``: the redis package costs ~6 MiB of
resident memory, which a gateway with ``state: embedded`` should not pay. The ``CacheStore``
protocol and the embedded backend are in ``gateway.cache.store``.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.redis_pool import bounded_client

# The same logger as the embedded backend's: one name for every cache failure.
log = logging.getLogger("gateway.cache")

__all__ = ["RedisStore"]


# SET the answer, index it by expiry time, drop expired index entries, then evict the entries
# closest to expiry (the oldest, with one TTL) while the index holds more than the bound. One
# script, so concurrent gateways cannot interleave between the count and the eviction.
_SET_BOUNDED = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local victims = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #victims, 2 do redis.call('DEL', victims[i]) end
end
"""


class RedisStore:
    """Answers in Redis under ``{key_prefix}cache:{key}``, with ``SET ... PX`` expiry.

    Size: each entry expires with its TTL, and ``max_entries`` bounds the whole cache under this
    prefix (all tenants together; evicting the entries nearest to expiry first) through a sorted
    set index kept by one Lua script. With ``max_entries=None`` a store is one plain ``SET``.

    Memory: budget counters live in Redis too (``state: redis``), and they carry TTLs, so any
    eviction policy (``volatile-*`` as much as ``allkeys-*``) may evict them under memory
    pressure and forget spend. A Redis that holds budgets needs ``maxmemory-policy noeviction``
    (writes then fail when it is full, which budgets report per ``on_backend_error`` and the
    cache turns into misses); or give the cache a Redis (or database) of its own, with
    ``maxmemory`` and ``allkeys-lru``.

    Failures: short socket timeouts and no retries, and after a failure the store stays closed
    for ``retry_after_s`` (lookups are misses, stores are skipped), so a Redis outage costs each
    request nothing rather than a connect timeout, and the log gets one line per outage.
    Redis Cluster: the script touches the entry and the index, so both need one hash slot (put a
    ``{...}`` hash tag in ``key_prefix``).
    """

    def __init__(
        self,
        url: str,
        key_prefix: str = "switchboard:",
        max_entries: int | None = None,
        *,
        timeout_s: float = 0.5,
        retry_after_s: float = 5.0,
        max_connections: int = 50,
        pool_timeout_s: float = 0.5,
    ) -> None:
        self._prefix = f"{key_prefix}cache:"
        self._index = f"{self._prefix}index"
        self._max_entries = max_entries
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._client = bounded_client(
            url, max_connections=max_connections, pool_timeout_s=pool_timeout_s, timeout_s=timeout_s
        )
        self._set_bounded = self._client.register_script(_SET_BOUNDED)

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, action: str, exc: BaseException) -> None:
        if isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, TimeoutError):
            # Every pooled connection was busy for pool_timeout_s: a burst, not an outage. This
            # request misses; the cache stays on for the others.
            log.debug("cache %s skipped: no free Redis connection", action)
            return
        if self._available():
            log.warning(
                "cache %s failed (Redis: %s: %s); cache off for %.0f s",
                action,
                type(exc).__name__,
                exc,
                self._retry_after_s,
            )
        self._down_until = time.monotonic() + self._retry_after_s

    async def get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        try:
            value = await self._client.get(self._key(key))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("read", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if not self._available():
            return
        ttl_ms = max(1, round(ttl_s * 1000))
        try:
            if self._max_entries is None:
                await self._client.set(self._key(key), value, px=ttl_ms)
            else:
                await self._set_bounded(
                    keys=[self._key(key), self._index], args=[value, ttl_ms, self._max_entries]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("write", exc)

    async def aclose(self) -> None:
        await self._client.aclose()
