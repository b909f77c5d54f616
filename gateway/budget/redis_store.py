"""The shared budget store: Redis with Lua scripts, so gateways on several hosts act as one.

Atomicity: Redis runs a Lua script to its end before it serves any other command, so the check of
every scope and the deduction from all of them (``_RESERVE``) cannot interleave with another
request's, whichever host sent it. All keys of one reservation go into one script call.

Keys, under the configured ``key_prefix``:

- ``budget:c:{scope}``: a counter, a hash ``{settled, reserved}`` (micro-USD); it expires
  ``counter_retention_s`` after its period resets (``Scope.resets_at``).
- ``budget:r:{id}``: a reservation, a hash ``{amount, scopes, state, expires}``; it expires
  ``tombstone_s`` after its own TTL, as a safety net behind ``reap_expired``.
- ``budget:reservations``: a sorted set of open reservation ids by expiry, for ``reap_expired``.
- ``budget:rl:{counter}:{window}``: a rate-limit window's count, expiring with the window.

Redis Cluster: a script's keys must share a hash slot; put a ``{...}`` hash tag in the prefix.
Give the server a ``maxmemory-policy`` that never evicts these keys (``noeviction``, or a separate
Redis for budgets): counters carry a TTL, so ``volatile-*`` policies may evict them under memory
pressure, which would forget spend.

Redis unreachable: every call raises ``BudgetBackendError`` (short socket timeouts, no retries),
translated in ``_guard`` and nowhere else; after a failure the store refuses at once for
``retry_after_s`` rather than paying a connect timeout on every request. The caller applies the
tenant's ``on_backend_error``: by default a request that needs a budget is refused
(fail_closed), one that only needs a rate limit is served (fail_open).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.budget.store import (
    DEFAULT_COUNTER_RETENTION_S,
    DEFAULT_TOMBSTONE_S,
    BudgetBackendError,
    DuplicateReservation,
    RateHit,
    RateResult,
    ReserveResult,
    Scope,
    ScopeState,
    check_amount,
    unique_keys,
    window_bounds,
)
from gateway.redis_pool import bounded_client

__all__ = ["RedisBudgetStore"]

log = logging.getLogger("gateway.budget")

# KEYS: reservation, open-reservation zset, counter 1..n
# ARGV: amount, reservation expiry (unix s), reservation id, reservation key expiry (unix s),
#       scopes JSON, then per counter: limit (-1: none), counter expiry (unix s, 0: none)
# Returns {-1} for a duplicate id, else {ok, blocked index (0: none), spent 1..k}.
# Amounts reach HINCRBY as the decimal strings Python sent: a Lua number could be rendered in
# exponent form, which Redis refuses as an integer.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local amount = tonumber(ARGV[1])
local n = #KEYS - 2
local spent = {}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i + 2], 'settled', 'reserved')
  local s = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  spent[i] = s
  local limit = tonumber(ARGV[4 + 2 * i])
  if limit >= 0 and s + amount > limit then
    return {0, i, unpack(spent)}
  end
end
for i = 1, n do
  local key = KEYS[i + 2]
  redis.call('HINCRBY', key, 'reserved', ARGV[1])
  local expire_at = tonumber(ARGV[5 + 2 * i])
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
  spent[i] = spent[i] + amount
end
redis.call('HSET', KEYS[1], 'amount', ARGV[1], 'scopes', ARGV[5], 'state', 'open',
           'expires', ARGV[2])
redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return {1, 0, unpack(spent)}
"""

# Settle (actual >= 0) or release (actual = 0) one reservation.
# KEYS: reservation, zset, counter 1..n. ARGV: actual, scopes JSON as read, id,
# then per counter: its expiry (unix s, 0: none), re-applied in case the counter was dropped.
# Returns 1 done, 0 unknown id, -1 the reservation changed since its scopes were read.
_FINISH = """
local r = redis.call('HMGET', KEYS[1], 'amount', 'scopes')
if not r[1] then return 0 end
if r[2] ~= ARGV[2] then return -1 end
local amount = tonumber(r[1])
local actual = tonumber(ARGV[1])
for i = 3, #KEYS do
  if amount ~= 0 then redis.call('HINCRBY', KEYS[i], 'reserved', '-' .. r[1]) end
  if actual ~= 0 then redis.call('HINCRBY', KEYS[i], 'settled', ARGV[1]) end
  local expire_at = tonumber(ARGV[1 + i])
  if expire_at > 0 then redis.call('EXPIREAT', KEYS[i], expire_at) end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# Release one reservation past its TTL and keep it as a tombstone with nothing reserved.
# KEYS: reservation, zset, counter 1..n. ARGV: scopes JSON as read, id, now, tombstone expiry.
# Returns 1 released, 0 nothing to do, -1 the reservation changed since its scopes were read.
_EXPIRE = """
local r = redis.call('HMGET', KEYS[1], 'amount', 'scopes', 'state', 'expires')
if not r[1] then redis.call('ZREM', KEYS[2], ARGV[2]); return 0 end
if r[2] ~= ARGV[1] then return -1 end
if r[3] ~= 'open' then redis.call('ZREM', KEYS[2], ARGV[2]); return 0 end
if tonumber(r[4]) > tonumber(ARGV[3]) then return 0 end
local amount = tonumber(r[1])
for i = 3, #KEYS do
  if amount ~= 0 then redis.call('HINCRBY', KEYS[i], 'reserved', '-' .. r[1]) end
end
redis.call('HSET', KEYS[1], 'amount', 0, 'state', 'expired')
redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[4]))
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# All or nothing over several rate windows.
# KEYS: window counters. ARGV: per counter: amount, limit, expiry (unix ms).
# Returns {all fit (1/0), then per counter: fits (1/0), used (after if counted, else before)}.
_HIT = """
local used = {}
local fits = {}
local ok = 1
for i = 1, #KEYS do
  local u = tonumber(redis.call('GET', KEYS[i]) or '0')
  used[i] = u
  if u + tonumber(ARGV[3 * i - 2]) > tonumber(ARGV[3 * i - 1]) then
    fits[i] = 0
    ok = 0
  else
    fits[i] = 1
  end
end
local reply = {ok}
for i = 1, #KEYS do
  if ok == 1 then
    used[i] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
    redis.call('PEXPIREAT', KEYS[i], ARGV[3 * i])
  end
  reply[2 * i] = fits[i]
  reply[2 * i + 1] = used[i]
end
return reply
"""

_REAP_BATCH = 200


class RedisBudgetStore:
    """Budget counters, reservations and rate windows in Redis under ``key_prefix``."""

    backend_name = "Redis"

    def __init__(
        self,
        url: str,
        key_prefix: str = "switchboard:",
        *,
        timeout_s: float = 0.5,
        retry_after_s: float = 1.0,
        counter_retention_s: float = DEFAULT_COUNTER_RETENTION_S,
        tombstone_s: float = DEFAULT_TOMBSTONE_S,
        max_connections: int = 50,
        pool_timeout_s: float = 2.0,
    ) -> None:
        self.url = url
        self._prefix = f"{key_prefix}budget:"
        self._zset = f"{self._prefix}reservations"
        self._retention_s = counter_retention_s
        self._tombstone_s = tombstone_s
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._client = bounded_client(
            url, max_connections=max_connections, pool_timeout_s=pool_timeout_s, timeout_s=timeout_s
        )
        # Registered once; redis-py sends EVALSHA and falls back to EVAL after a server restart.
        self._reserve = self._client.register_script(_RESERVE)
        self._finish = self._client.register_script(_FINISH)
        self._expire = self._client.register_script(_EXPIRE)
        self._hit = self._client.register_script(_HIT)

    # -- plumbing --------------------------------------------------------------------------------

    def counter_key(self, scope_key: str) -> str:
        return f"{self._prefix}c:{scope_key}"

    def _reservation_key(self, reservation_id: str) -> str:
        return f"{self._prefix}r:{reservation_id}"

    @asynccontextmanager
    async def _guard(self, action: str) -> AsyncIterator[None]:
        """The one place Redis failures become ``BudgetBackendError``."""
        if time.monotonic() < self._down_until:
            raise BudgetBackendError(
                f"budget store (Redis at {self._safe_url()}) is unavailable; retrying in "
                f"{self._down_until - time.monotonic():.1f} s"
            )
        try:
            yield
        except (RedisError, OSError, TimeoutError) as exc:
            unreachable = isinstance(
                exc, RedisConnectionError | RedisTimeoutError | OSError | TimeoutError
            )
            if time.monotonic() >= self._down_until:
                log.warning(
                    "budget %s failed (Redis at %s: %s: %s)",
                    action,
                    self._safe_url(),
                    type(exc).__name__,
                    exc,
                )
            if unreachable:
                # Only an unreachable server opens the breaker; an error reply concerns one key.
                self._down_until = time.monotonic() + self._retry_after_s
            raise BudgetBackendError(
                f"budget {action} failed: Redis at {self._safe_url()}: {type(exc).__name__}: "
                f"{exc}; check that Redis is running and reachable"
            ) from exc

    def _safe_url(self) -> str:
        # Never log a password from the URL.
        scheme, _, rest = self.url.partition("://")
        _, at, host = rest.rpartition("@")
        return f"{scheme}://***@{host}" if at else self.url

    def _counter_expiry(self, scope: Scope) -> int:
        return scope.expires_at + math.ceil(self._retention_s) if scope.expires_at else 0

    # -- budgets ---------------------------------------------------------------------------------

    async def reserve(
        self,
        reservation_id: str,
        scopes: Sequence[Scope],
        amount_micros: int,
        ttl_s: float,
        *,
        now: float | None = None,
    ) -> ReserveResult:
        check_amount("amount_micros", amount_micros)
        unique_keys([s.key for s in scopes], "scope key")
        at = time.time() if now is None else now
        expires = at + ttl_s
        counters = [self.counter_key(s.key) for s in scopes]
        entries = [[c, self._counter_expiry(s)] for c, s in zip(counters, scopes, strict=True)]
        args: list[Any] = [
            amount_micros,
            repr(expires),
            reservation_id,
            math.ceil(expires + self._tombstone_s),
            json.dumps(entries),
        ]
        for scope, (_, expire_at) in zip(scopes, entries, strict=True):
            args += [-1 if scope.limit_micros is None else scope.limit_micros, expire_at]
        async with self._guard("reserve"):
            reply = await self._reserve(
                keys=[self._reservation_key(reservation_id), self._zset, *counters], args=args
            )
        code = int(reply[0])
        if code == -1:
            raise DuplicateReservation(
                f"reservation {reservation_id!r} exists; use a fresh id (the request id)"
            )
        spent = [int(v) for v in reply[2:]]
        states = tuple(ScopeState(s, v) for s, v in zip(scopes, spent, strict=False))
        if code == 1:
            return ReserveResult(ok=True, scopes=states)
        blocked = states[int(reply[1]) - 1]
        return ReserveResult(ok=False, scopes=states, blocked=blocked)

    async def settle(self, reservation_id: str, actual_micros: int) -> bool:
        check_amount("actual_micros", actual_micros)
        return await self._apply_finish(reservation_id, actual_micros, "settle")

    async def release(self, reservation_id: str) -> bool:
        return await self._apply_finish(reservation_id, 0, "release")

    async def _apply_finish(self, reservation_id: str, actual: int, action: str) -> bool:
        key = self._reservation_key(reservation_id)
        # Two steps so the script declares every key it touches: read the (immutable) scopes,
        # then finish in one script that checks they are still the reservation's.
        for _ in range(3):
            async with self._guard(action):
                raw = await self._client.hget(key, "scopes")
                if raw is None:
                    return False
                entries = json.loads(raw)
                result = await self._finish(
                    keys=[key, self._zset, *(c for c, _ in entries)],
                    args=[actual, raw, reservation_id, *(e for _, e in entries)],
                )
            if int(result) != -1:
                return int(result) == 1
        return False

    async def spent(self, scope_key: str) -> int:
        async with self._guard("read"):
            values = await self._client.hmget(self.counter_key(scope_key), "settled", "reserved")
        return sum(int(v) for v in values if v is not None)

    async def settled(self, scope_key: str) -> int:
        async with self._guard("read"):
            value = await self._client.hget(self.counter_key(scope_key), "settled")
        return 0 if value is None else int(value)

    async def open_reservations(self, limit: int = 10_000) -> list[str]:
        async with self._guard("list"):
            ids = await self._client.zrange(self._zset, 0, limit - 1)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def reap_expired(self, now: float | None = None) -> int:
        at = time.time() if now is None else now
        released = 0
        seen: set[bytes] = set()
        async with self._guard("reap"):
            while True:
                ids = await self._client.zrangebyscore(
                    self._zset, "-inf", repr(at), start=0, num=_REAP_BATCH
                )
                fresh = [i for i in ids if isinstance(i, bytes) and i not in seen]
                if not fresh:
                    break
                for raw_id in fresh:
                    seen.add(raw_id)
                    reservation_id = raw_id.decode()
                    key = self._reservation_key(reservation_id)
                    raw = await self._client.hget(key, "scopes")
                    if raw is None:
                        # Its hash expired (reap did not run for a whole tombstone time).
                        await self._client.zrem(self._zset, raw_id)
                        continue
                    entries = json.loads(raw)
                    result = await self._expire(
                        keys=[key, self._zset, *(c for c, _ in entries)],
                        args=[raw, reservation_id, repr(at), math.ceil(at + self._tombstone_s)],
                    )
                    released += int(result) == 1
        if released:
            log.warning(
                "released %d budget reservation(s) past their TTL (a process died or hung "
                "between reserve and settle)",
                released,
            )
        return released

    # -- rate limits -----------------------------------------------------------------------------

    async def hit(
        self,
        counter_key: str,
        limit: int,
        window_s: float,
        amount: int = 1,
        *,
        now: float | None = None,
    ) -> RateResult:
        (result,) = await self.hit_many([RateHit(counter_key, limit, window_s, amount)], now=now)
        return result

    async def hit_many(
        self, hits: Sequence[RateHit], *, now: float | None = None
    ) -> tuple[RateResult, ...]:
        unique_keys([h.counter_key for h in hits], "counter_key")
        if not hits:
            return ()
        at = time.time() if now is None else now
        keys: list[str] = []
        args: list[int] = []
        resets: list[float] = []
        for h in hits:
            index, reset_s = window_bounds(at, h.window_s)
            keys.append(f"{self._prefix}rl:{h.counter_key}:{index}")
            # A window's key lives one window longer, for clocks a little apart between hosts.
            args += [h.amount, h.limit, math.ceil((at + reset_s + h.window_s) * 1000)]
            resets.append(reset_s)
        async with self._guard("rate limit"):
            reply = await self._hit(keys=keys, args=args)
        return tuple(
            RateResult(
                allowed=bool(int(reply[1 + 2 * i])),
                limit=h.limit,
                remaining=max(0, h.limit - int(reply[2 + 2 * i])),
                reset_s=resets[i],
            )
            for i, h in enumerate(hits)
        )

    async def aclose(self) -> None:
        await self._client.aclose()
