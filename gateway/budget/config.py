"""A tenant's ``budget:`` and ``rate_limits:`` blocks: typed, frozen, validated once at start-up.

Amounts in the YAML are in the tenant's currency (USD unless ``currency`` says otherwise, with
``usd_rate`` = units of that currency per 1 USD, e.g. ``CNY`` at ``7.1``); everything the
enforcement code sees is integer micro-USD (``gateway.money.Micros``). Limits convert rounding
*down*, so a limit never admits more than the configured amount.

Example (``tenants.<name>`` in ``config/*.yaml``)::

    timezone: Asia/Shanghai     # the tenant's zone: budget periods and reports follow it
    budget:
      currency: CNY
      usd_rate: 7.1
      daily_limit: 100
      monthly_limit: 2000
      request_limit: 2
      model_limits: {gpt-4o: {daily: 50}}
      user_limits: {daily: 5}
      soft_limit: 0.8
      soft_action: downgrade
      hard_action: reject
      on_backend_error: fail_closed
      default_max_output_tokens: 1024
    rate_limits:
      per_key: {requests_per_minute: 600, tokens_per_minute: 200000}
      per_tenant: {requests_per_minute: 3000}

Cross-file checks (that a ``model_limits`` key names a priced model) belong to the gateway
config's loader, which knows the models.
"""

from __future__ import annotations

import difflib
import zoneinfo
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.money import MICROS_PER_USD, Micros

__all__ = [
    "BudgetConfig",
    "HardAction",
    "OnBackendError",
    "PeriodLimits",
    "RateLimit",
    "RateLimitsConfig",
    "SoftAction",
]

SoftAction = Literal["downgrade", "cache_only", "warn"]
HardAction = Literal["reject", "cache_only"]
OnBackendError = Literal["fail_closed", "fail_open"]

PositiveInt = Annotated[int, Meta(ge=1)]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Own base rather than gateway.config's: gateway.config imports this module.
    pass


def _check_amount(name: str, value: Decimal | None) -> None:
    if value is not None and not (value > 0):
        raise ValueError(
            f"`{name}` must be an amount > 0 in the budget's currency, got {value}; "
            "remove the key for no limit"
        )


class PeriodLimits(_Strict, frozen=True):
    """Hard limits per calendar day and month, in the budget's currency."""

    daily: Decimal | None = None
    monthly: Decimal | None = None

    def __post_init__(self) -> None:
        _check_amount("daily", self.daily)
        _check_amount("monthly", self.monthly)
        if self.daily is None and self.monthly is None:
            raise ValueError("give `daily`, `monthly` or both (amounts in the budget's currency)")


@lru_cache(maxsize=256)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _zone_error(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ";"
    return (
        f"unknown time zone {name!r}{hint} use an IANA name such as 'Asia/Shanghai', "
        "'America/New_York' or 'UTC'"
    )


class BudgetConfig(_Strict, frozen=True):
    """A tenant's spending limits. Every key is optional; no limit set means nothing is capped."""

    # IANA time zone of the limits' calendar days and months. Unset (recommended): the tenant's
    # `timezone`, which reports follow too; set it only to count budgets in another zone.
    timezone: str | None = None
    # ISO 4217 code of the amounts below; USD, or any other with `usd_rate`.
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")] = "USD"
    # Units of `currency` per 1 USD (CNY: about 7.1). Required unless the currency is USD.
    usd_rate: Decimal | None = None
    daily_limit: Decimal | None = None
    monthly_limit: Decimal | None = None
    # Ceiling on one request's reserved cost (its estimate with the output cap).
    request_limit: Decimal | None = None
    # Per upstream model (the name under `tiers.*.model`): its own daily/monthly limits.
    model_limits: dict[str, PeriodLimits] = {}
    # Per end user (the request's `user` field): limits each user has on their own.
    user_limits: PeriodLimits | None = None
    # Soft limit: this share of each hard limit; once reached, `soft_action` applies.
    soft_limit: Annotated[float, Meta(gt=0, le=1)] | None = None
    # Unset with a soft limit: warn (a header only).
    soft_action: SoftAction | None = None
    # What happens when a request would cross a hard limit.
    hard_action: HardAction = "reject"
    # When the budget store cannot be reached: refuse (fail_closed) or serve unmetered (fail_open).
    on_backend_error: OnBackendError = "fail_closed"
    # Output cap for requests without `max_tokens` (also sent upstream), so no reservation is
    # unbounded. Unset: the tier's `max_output_tokens`.
    default_max_output_tokens: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.timezone is not None:
            try:
                _zone(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(_zone_error(self.timezone)) from None
        if self.currency == "USD":
            if self.usd_rate is not None and self.usd_rate != 1:
                raise ValueError(
                    f"`usd_rate` is {self.usd_rate} but `currency` is USD; remove `usd_rate`, "
                    "or set `currency` to the currency the amounts are in (e.g. CNY)"
                )
        elif self.usd_rate is None:
            raise ValueError(
                f"currency {self.currency} needs `usd_rate`: units of {self.currency} per 1 USD "
                "(e.g. `usd_rate: 7.1` for CNY)"
            )
        elif not (self.usd_rate > 0):
            raise ValueError(f"`usd_rate` must be > 0 ({self.currency} per 1 USD)")
        for name in ("daily_limit", "monthly_limit", "request_limit"):
            _check_amount(name, getattr(self, name))
        if (
            self.daily_limit is not None
            and self.monthly_limit is not None
            and self.daily_limit > self.monthly_limit
        ):
            raise ValueError(
                f"`daily_limit` ({self.daily_limit}) is above `monthly_limit` "
                f"({self.monthly_limit}); lower it, or raise the monthly limit"
            )
        for model in self.model_limits:
            if not model:
                raise ValueError("`model_limits` keys must be model names, got an empty one")
        if self.soft_action is not None and self.soft_limit is None:
            raise ValueError(
                "`soft_action` needs `soft_limit`: the share of each hard limit at which it "
                "applies (e.g. `soft_limit: 0.8`)"
            )
        if self.soft_limit is not None and not self.has_limits:
            raise ValueError(
                "`soft_limit` is a share of the hard limits, but none is set; set `daily_limit`, "
                "`monthly_limit`, `model_limits` or `user_limits`"
            )

    # -- derived values -------------------------------------------------------------------------

    @property
    def has_limits(self) -> bool:
        """Whether any hard limit (period, model or user) is configured."""
        return bool(
            self.daily_limit is not None
            or self.monthly_limit is not None
            or self.model_limits
            or self.user_limits is not None
        )

    @property
    def effective_soft_action(self) -> SoftAction | None:
        """The soft action in force: None without a soft limit, else the action (default warn)."""
        if self.soft_limit is None:
            return None
        return self.soft_action or "warn"

    def zone(self, tenant_timezone: str = "UTC") -> zoneinfo.ZoneInfo:
        """The zone of the budget's periods: its own `timezone`, else the tenant's."""
        return _zone(self.timezone or tenant_timezone)

    @property
    def rate(self) -> Decimal:
        """Units of the budget's currency per 1 USD (1 for USD)."""
        return Decimal(1) if self.usd_rate is None else self.usd_rate

    def to_micros(self, amount: Decimal) -> Micros:
        """An amount in the budget's currency as micro-USD, rounded down."""
        usd = amount / self.rate
        return Micros(int((usd * MICROS_PER_USD).to_integral_value(rounding=ROUND_FLOOR)))

    def from_micros(self, micros: int) -> Decimal:
        """Micro-USD in the budget's currency (exact Decimal; format it for display)."""
        return Decimal(micros) * self.rate / MICROS_PER_USD

    def _opt(self, amount: Decimal | None) -> Micros | None:
        return None if amount is None else self.to_micros(amount)

    @property
    def daily_limit_micros(self) -> Micros | None:
        return self._opt(self.daily_limit)

    @property
    def monthly_limit_micros(self) -> Micros | None:
        return self._opt(self.monthly_limit)

    @property
    def request_limit_micros(self) -> Micros | None:
        return self._opt(self.request_limit)

    def soft_limit_micros(self, hard_limit_micros: int) -> int | None:
        """The soft threshold for one hard limit, or None when no soft limit is configured."""
        if self.soft_limit is None:
            return None
        return int(Decimal(hard_limit_micros) * Decimal(str(self.soft_limit)))


class RateLimit(_Strict, frozen=True):
    """Requests and tokens (prompt + output cap) per minute; unset means unlimited."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError(
                "give `requests_per_minute`, `tokens_per_minute` or both; remove the block "
                "for no limit"
            )


class RateLimitsConfig(_Strict, frozen=True):
    # Each of the tenant's API keys on its own.
    per_key: RateLimit | None = None
    # All of the tenant's keys together.
    per_tenant: RateLimit | None = None
    # Rate limits protect capacity, not money: by default they let traffic through when the store
    # is down (fail_open); budgets default to fail_closed.
    on_backend_error: OnBackendError = "fail_open"
