"""Passive tier health: a circuit breaker per tier, fed by the outcome of real calls.

A tier that fails ``failures`` calls in a row (5xx, timeouts, refused connections, a full queue)
is unhealthy for ``cooldown_s``; the router skips it meanwhile. After the cooldown one request is
let through (half-open): success closes the breaker, failure opens it for another cooldown. No
probe requests: a probe would cost money on a hosted tier and prove less than real traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    # Half-open: one trial request is in flight until this time; others still skip the tier.
    # A deadline, not a flag: a trial that never reports back (answered from the cache, client
    # gone) must not keep the tier skipped for ever.
    trial_until: float = 0.0


@dataclass(slots=True)
class TierHealth:
    failures: int = 3
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _breakers: dict[str, _Breaker] = field(default_factory=dict)

    def unhealthy(self) -> frozenset[str]:
        """Tiers the router should skip now. Lets one trial through per elapsed cooldown."""
        if not self._breakers:
            return frozenset()
        now = self.clock()
        skip: set[str] = set()
        for tier, b in self._breakers.items():
            if b.failures < self.failures:
                continue
            if now < b.open_until or now < b.trial_until:
                skip.add(tier)
            else:
                b.trial_until = now + self.cooldown_s  # this caller is the trial
        return frozenset(skip)

    def unhealthy_now(self) -> frozenset[str]:
        """Tiers whose breaker is open, without claiming a half-open trial (for reports)."""
        now = self.clock()
        return frozenset(
            tier
            for tier, b in self._breakers.items()
            if b.failures >= self.failures and (now < b.open_until or now < b.trial_until)
        )

    def record_success(self, tier: str) -> None:
        if tier in self._breakers:
            del self._breakers[tier]

    def record_failure(self, tier: str) -> None:
        b = self._breakers.setdefault(tier, _Breaker())
        b.failures += 1
        b.trial_until = 0.0
        if b.failures >= self.failures:
            b.open_until = self.clock() + self.cooldown_s

    def snapshot(self) -> dict[str, dict[str, float | int | bool]]:
        """For /readyz and tests: each tracked tier's failure count and whether it is skipped."""
        now = self.clock()
        return {
            tier: {
                "consecutive_failures": b.failures,
                "skipped": b.failures >= self.failures
                and (now < b.open_until or now < b.trial_until),
                "retry_in_s": round(max(0.0, b.open_until - now), 3),
            }
            for tier, b in self._breakers.items()
        }
