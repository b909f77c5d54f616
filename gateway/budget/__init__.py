"""Budgets and rate limits: typed config, calendar periods, and atomic spend counters.

The pipeline's part, for one request (see docs/budgets.md)::

    scopes = budget_scopes(tenant, cfg, model=model, user=user, now=now)
    result = await store.reserve(request_id, scopes, estimate_micros, ttl_s)
    ... call the model; on failure: await store.release(request_id)
    await store.settle(request_id, actual_micros)

Backends: ``SqliteBudgetStore`` (embedded) and ``RedisBudgetStore`` (shared), one contract
(``BudgetStore``). Nothing here imports the HTTP layer.
"""

from typing import TYPE_CHECKING, Any

from gateway.budget.config import (
    BudgetConfig,
    HardAction,
    OnBackendError,
    PeriodLimits,
    RateLimit,
    RateLimitsConfig,
    SoftAction,
)
from gateway.budget.periods import Period, PeriodKind, current_period, day_period, month_period
from gateway.budget.scopes import (
    RateUnit,
    budget_scopes,
    period_key,
    rate_counter_key,
    retry_after_s,
)
from gateway.budget.sqlite_store import SqliteBudgetStore
from gateway.budget.store import (
    BudgetBackendError,
    BudgetError,
    BudgetStore,
    DuplicateReservation,
    RateHit,
    RateResult,
    ReserveResult,
    Scope,
    ScopeState,
    reap_periodically,
)

if TYPE_CHECKING:
    from gateway.budget.redis_store import RedisBudgetStore

__all__ = [
    "BudgetBackendError",
    "BudgetConfig",
    "BudgetError",
    "BudgetStore",
    "DuplicateReservation",
    "HardAction",
    "OnBackendError",
    "Period",
    "PeriodKind",
    "PeriodLimits",
    "RateLimit",
    "RateLimitsConfig",
    "RateHit",
    "RateResult",
    "RateUnit",
    "RedisBudgetStore",
    "ReserveResult",
    "Scope",
    "ScopeState",
    "SoftAction",
    "SqliteBudgetStore",
    "budget_scopes",
    "current_period",
    "day_period",
    "month_period",
    "period_key",
    "reap_periodically",
    "rate_counter_key",
    "retry_after_s",
]


def __getattr__(name: str) -> Any:
    # RedisBudgetStore is imported on first use only (state: redis): the redis package costs
    # ~6 MiB of resident memory, which a gateway with state: embedded should not pay.
    if name == "RedisBudgetStore":
        from gateway.budget.redis_store import RedisBudgetStore

        return RedisBudgetStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
