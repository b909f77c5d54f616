"""Which counters a request charges: the tenant's day and month, its model's, its end user's.

Counter keys are built here and nowhere else, so every backend and every report names the same
counter the same way::

    t/{tenant}/day/2026-11-26
    t/{tenant}/month/2026-11
    t/{tenant}/model/{model}/day/2026-11-26
    t/{tenant}/user/{user}/month/2026-11
    rl/{tenant}/key/{key_id}/tokens         (rate limits; the store appends the window)

Names are percent-encoded, so a ``/`` or ``:`` in a model name or an end user's id cannot make two
counters collide; very long ones are replaced by a hash.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal
from urllib.parse import quote

from gateway.budget.config import BudgetConfig, PeriodLimits
from gateway.budget.periods import Period, day_period, month_period
from gateway.budget.store import Scope, ScopeState

__all__ = [
    "RateUnit",
    "budget_scopes",
    "period_key",
    "rate_counter_key",
    "retry_after_s",
]

RateUnit = Literal["requests", "tokens"]

_MAX_NAME = 120


def _name(value: str) -> str:
    encoded = quote(value, safe="")
    if len(encoded) > _MAX_NAME:
        return "sha256-" + hashlib.sha256(value.encode()).hexdigest()
    return encoded


def period_key(
    tenant: str, period: Period, *, model: str | None = None, user: str | None = None
) -> str:
    """The counter key of one tenant's period, optionally narrowed to a model or an end user."""
    parts = ["t", _name(tenant)]
    if model is not None:
        parts += ["model", _name(model)]
    if user is not None:
        parts += ["user", _name(user)]
    parts += [period.kind, period.id]
    return "/".join(parts)


def _limited(
    cfg: BudgetConfig,
    tenant: str,
    day: Period,
    month: Period,
    limits: PeriodLimits,
    *,
    model: str | None = None,
    user: str | None = None,
) -> list[Scope]:
    scopes: list[Scope] = []
    if limits.daily is not None:
        key = period_key(tenant, day, model=model, user=user)
        scopes.append(Scope(key, cfg.to_micros(limits.daily), day.end))
    if limits.monthly is not None:
        key = period_key(tenant, month, model=model, user=user)
        scopes.append(Scope(key, cfg.to_micros(limits.monthly), month.end))
    return scopes


def budget_scopes(
    tenant: str,
    cfg: BudgetConfig,
    *,
    model: str | None,
    user: str | None,
    now: datetime,
    tenant_timezone: str = "UTC",
) -> list[Scope]:
    """The scopes one request reserves against, at ``now`` (aware), in the budget's time zone
    (``budget.timezone``, else ``tenant_timezone``: pass the tenant's ``timezone``).

    Always the tenant's day and month (unlimited when no limit is set, so spend is still
    counted), then the model's limits if ``model_limits`` names ``model``, then the end user's
    if ``user_limits`` is set and the request has a ``user``.
    """
    zone = cfg.zone(tenant_timezone)
    day = day_period(zone, now)
    month = month_period(zone, now)
    scopes = [
        Scope(period_key(tenant, day), cfg.daily_limit_micros, day.end),
        Scope(period_key(tenant, month), cfg.monthly_limit_micros, month.end),
    ]
    if model is not None and model in cfg.model_limits:
        scopes += _limited(cfg, tenant, day, month, cfg.model_limits[model], model=model)
    if user and cfg.user_limits is not None:
        scopes += _limited(cfg, tenant, day, month, cfg.user_limits, user=user)
    return scopes


def rate_counter_key(tenant: str, unit: RateUnit, key_id: str | None = None) -> str:
    """The rate-limit counter of a tenant (``key_id`` None) or of one of its API keys.

    ``key_id`` should be a stable, non-secret id of the key (e.g. a prefix of its hash).
    """
    if key_id is None:
        return f"rl/{_name(tenant)}/{unit}"
    return f"rl/{_name(tenant)}/key/{_name(key_id)}/{unit}"


def retry_after_s(state: ScopeState, now: datetime) -> int | None:
    """Seconds until the blocking scope's period resets (``retry-after``), or None if never."""
    resets_at = state.scope.resets_at
    if resets_at is None:
        return None
    return max(1, int((resets_at - now).total_seconds() + 0.999999))
