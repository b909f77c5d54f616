"""The budget store contract: atomic reservations against spend counters, and rate-limit windows.

Two backends implement ``BudgetStore`` and pass one shared test suite:
``SqliteBudgetStore`` (embedded: one file, several worker processes on one host) and
``RedisBudgetStore`` (shared: several hosts).

A **scope** is one counter with an optional limit: a tenant's day, its month, one model's day, one
end user's month, ... Each counter holds two integer micro-USD totals: *settled* (actual costs of
finished requests) and *reserved* (estimates of requests in flight). Its *spent* is their sum.

The protocol for one request::

    result = await store.reserve(request_id, scopes, estimate, ttl_s=300)
    if not result.ok: ...                       # 429 / cache only, from result.blocked
    try:
        ... call the model ...
    except Exception:
        await store.release(request_id)         # nothing was spent
        raise
    await store.settle(request_id, actual)      # the estimate becomes the actual cost

``reserve`` checks every scope and deducts from all of them, or from none, in one atomic step:
concurrent requests can never together pass a limit (unlike a read followed by a write). A
reservation whose process died is released by ``reap_expired`` after its TTL; a late ``settle``
of an expired reservation still records the actual cost.

Errors::

    BudgetError
     ├── BudgetBackendError    the store is unreachable or failed: the caller applies
     │                         ``on_backend_error`` (fail_closed → refuse, fail_open → serve)
     └── DuplicateReservation  ``reserve`` with an id already in use (a bug in the caller)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "DEFAULT_COUNTER_RETENTION_S",
    "DEFAULT_TOMBSTONE_S",
    "BudgetBackendError",
    "BudgetError",
    "BudgetStore",
    "DuplicateReservation",
    "RateHit",
    "RateResult",
    "ReserveResult",
    "Scope",
    "ScopeState",
    "reap_periodically",
]

log = logging.getLogger("gateway.budget")

# Counters are kept this long after their period resets, so reports and reconciliation can read
# last month's totals.
DEFAULT_COUNTER_RETENTION_S = 40 * 86400
# An expired (reaped) reservation is remembered this long, so a late settle is still recorded.
DEFAULT_TOMBSTONE_S = 86400


class BudgetError(Exception):
    """Base of the budget store's errors."""


class BudgetBackendError(BudgetError):
    """The store could not be reached or failed; nothing is known to have been recorded.

    The caller decides with the tenant's ``on_backend_error``: ``fail_closed`` refuses the
    request (503), ``fail_open`` serves it without a reservation.
    """


class DuplicateReservation(BudgetError):
    """``reserve`` was called with a reservation id that is already in use."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One counter to check and charge.

    ``key`` names the counter (the store adds its own prefix); ``limit_micros`` is the hard limit,
    or None to count without limiting. ``resets_at`` is when the counter's period ends (aware);
    the store keeps the counter until then plus its retention, and callers use it for
    ``retry-after``. None: the counter never resets.
    """

    key: str
    limit_micros: int | None
    resets_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a scope needs a non-empty key")
        if self.limit_micros is not None and self.limit_micros < 0:
            raise ValueError(f"scope {self.key!r}: limit_micros must be >= 0 or None")
        if self.resets_at is not None and self.resets_at.utcoffset() is None:
            raise ValueError(f"scope {self.key!r}: resets_at must be timezone-aware")

    @property
    def expires_at(self) -> int:
        """Unix seconds after which the counter's period is over (0: never)."""
        return 0 if self.resets_at is None else math.ceil(self.resets_at.timestamp())


@dataclass(frozen=True, slots=True)
class ScopeState:
    """A scope and its spent total (settled + reserved, micro-USD) as ``reserve`` saw it.

    After a successful reservation, ``spent_micros`` includes it; for the scope that blocked one,
    it is the total without it.
    """

    scope: Scope
    spent_micros: int

    @property
    def limit_micros(self) -> int | None:
        return self.scope.limit_micros

    @property
    def remaining_micros(self) -> int | None:
        limit = self.scope.limit_micros
        return None if limit is None else max(0, limit - self.spent_micros)

    def used_share(self) -> float | None:
        """spent / limit (0.0 for a zero limit with nothing spent), or None without a limit."""
        limit = self.scope.limit_micros
        if limit is None:
            return None
        if limit == 0:
            return 0.0 if self.spent_micros == 0 else math.inf
        return self.spent_micros / limit


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """The outcome of ``reserve``: all scopes charged (``ok``) or none.

    ``scopes`` lists every checked scope in the order given. When refused, ``blocked`` is the
    first scope the amount would have taken over its limit; later scopes may be absent from
    ``scopes`` (the check stopped there).
    """

    ok: bool
    scopes: tuple[ScopeState, ...]
    blocked: ScopeState | None = None

    def over_share(self, share: float) -> ScopeState | None:
        """The first limited scope whose spent total reached ``share`` of its limit, if any.

        With the tenant's ``soft_limit`` this says whether the soft action applies.
        """
        for state in self.scopes:
            used = state.used_share()
            if used is not None and used >= share:
                return state
        return None


@dataclass(frozen=True, slots=True)
class RateHit:
    """One counter to hit: ``amount`` against ``limit`` per fixed window of ``window_s``."""

    counter_key: str
    limit: int
    window_s: float = 60.0
    amount: int = 1

    def __post_init__(self) -> None:
        if not self.counter_key:
            raise ValueError("a rate hit needs a non-empty counter_key")
        check_amount("amount", self.amount)
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s!r}")


@dataclass(frozen=True, slots=True)
class RateResult:
    """One rate-limit hit: ``allowed``, what is left in the window, seconds until it resets.

    ``remaining`` is after the hit when it was counted, before it when it was not.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float


class BudgetStore(Protocol):
    """Spend counters with atomic reservations, and fixed-window rate counters.

    Amounts are integer micro-USD. Every method raises ``BudgetBackendError`` when the backend is
    unreachable or fails, and nothing else for backend trouble.
    """

    # For messages ("Redis", "SQLite"): callers name the backend without importing its class
    # (importing RedisBudgetStore imports the redis package, ~6 MiB of resident memory).
    backend_name: str

    async def reserve(
        self,
        reservation_id: str,
        scopes: Sequence[Scope],
        amount_micros: int,
        ttl_s: float,
        *,
        now: float | None = None,
    ) -> ReserveResult:
        """Atomically: if ``spent + amount <= limit`` holds for every limited scope, add
        ``amount`` to the reserved total of every scope and remember the reservation for
        ``ttl_s`` seconds; otherwise change nothing. ``now`` (unix seconds) is for tests.
        """
        ...

    async def settle(self, reservation_id: str, actual_micros: int) -> bool:
        """Replace the reservation's amount by ``actual_micros`` in every scope it charged,
        moving it from reserved to settled (an actual above the estimate is still recorded in
        full). Also after the reservation expired. False when the id is unknown (never
        reserved, already settled or released, or expired longer ago than the tombstone time).
        """
        ...

    async def release(self, reservation_id: str) -> bool:
        """Give the reserved amount back to every scope (the request cost nothing). False when
        the id is unknown."""
        ...

    async def spent(self, scope_key: str) -> int:
        """Settled plus reserved micro-USD of one counter (0 when it does not exist)."""
        ...

    async def settled(self, scope_key: str) -> int:
        """Settled micro-USD of one counter only: the number to reconcile with the ledger."""
        ...

    async def reap_expired(self, now: float | None = None) -> int:
        """Release every reservation whose TTL passed before ``now`` (unix seconds, default:
        the current time), keeping a tombstone so a late settle still counts; drop tombstones
        and counters past their retention. Returns how many reservations were released."""
        ...

    async def open_reservations(self, limit: int = 10_000) -> list[str]:
        """Ids of up to ``limit`` reservations neither settled, released nor expired (requests
        in flight, or left by a process that died): for reconciling with the ledger."""
        ...

    async def hit(
        self,
        counter_key: str,
        limit: int,
        window_s: float,
        amount: int = 1,
        *,
        now: float | None = None,
    ) -> RateResult:
        """Count ``amount`` against a fixed window of ``window_s`` seconds aligned to the unix
        epoch (a minute window runs from :00 to :59). Atomic: allowed, and counted, only if the
        window's total stays within ``limit``; a refused hit counts nothing."""
        ...

    async def hit_many(
        self, hits: Sequence[RateHit], *, now: float | None = None
    ) -> tuple[RateResult, ...]:
        """Several counters at once (a key's and its tenant's, requests and tokens), all or
        nothing: counted in every window only if each of them fits. One result per hit, in
        order; each says whether that counter alone had room, so when any is refused, nothing
        was counted and the refused ones give the ``retry-after``."""
        ...

    async def aclose(self) -> None:
        """Close connections and threads. Idempotent."""
        ...


def check_amount(name: str, value: int) -> None:
    """Shared argument check of the backends: amounts are integer micro-USD >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0 (micro-USD), got {value!r}")


def unique_keys(keys: Sequence[str], what: str) -> None:
    """Shared argument check: a key may appear once per atomic call."""
    if len(set(keys)) != len(keys):
        raise ValueError(f"each {what} may appear once per call, got {list(keys)}")


def window_bounds(now: float, window_s: float) -> tuple[int, float]:
    """The fixed window containing ``now``: its index and the seconds until it ends."""
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    index = math.floor(now / window_s)
    return index, (index + 1) * window_s - now


async def reap_periodically(store: BudgetStore, interval_s: float = 30.0) -> None:
    """Run ``store.reap_expired()`` every ``interval_s`` seconds until cancelled.

    Start one per process in the app's lifespan (reaping is idempotent, so several processes
    may each run one). A backend failure is logged and retried at the next interval.
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            await store.reap_expired()
        except BudgetBackendError as exc:
            log.warning("budget reaper: %s; retrying in %.0f s", exc, interval_s)
