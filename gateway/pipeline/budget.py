"""The budget and rate-limit stages: ``limits`` before routing, ``reserve`` right before the tier.

    limits   enter: rate limits per key and per tenant, requests and tokens per minute (tokens =
                    prompt tokens + output cap), counted in one atomic step; refused → 429
                    ``rate_limit_exceeded`` with ``retry-after``. ``x-ratelimit-*`` headers on
                    every answer of a rate-limited tenant. Then the soft limit: the spent totals
                    of the tenant's (and the end user's) limits against ``soft_limit`` →
                    a downgrade signal for the router, cache only, or a warning header.
    reserve  enter, after every cache layer (an answer from a cache costs nothing, so it
                    reserves nothing): reservation = the most the request can cost on its route
                    or any fallback (prompt tokens × input price + output cap × output price);
                    above ``request_limit`` → 400; reserved atomically against every limit, or
                    refused → 429 ``insufficient_quota`` (with ``hard_action: cache_only`` too:
                    the caches have missed by then).
    settle_budget
             exit, placed before ``settle`` so that it runs after ``settle``'s exit priced the
                    answer: commit the ledger record, then settle the reservation to
                    ``ctx.cost_micros`` (errors and disconnects included), or release it when
                    nothing was generated (a failed call).

A tenant with neither ``budget`` nor ``rate_limits`` costs a dict lookup per stage: no store call.
The store's failures (``BudgetBackendError``) follow the tenant's ``on_backend_error``:
``fail_closed`` → 503 with ``retry-after``; ``fail_open`` → served unmetered, with a warning in the
log and the ``x-switchboard-budget-warning`` header.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from gateway.budget import (
    BudgetBackendError,
    BudgetConfig,
    BudgetStore,
    OnBackendError,
    RateHit,
    RateLimitsConfig,
    RateResult,
    RateUnit,
    ReserveResult,
    Scope,
    ScopeState,
    budget_scopes,
    rate_counter_key,
    retry_after_s,
)
from gateway.config import TenantConfig
from gateway.errors import BudgetExceeded, BudgetUnavailable, InvalidRequest, RateLimited
from gateway.keys import hash_key
from gateway.money import MICROS_PER_USD
from gateway.pipeline.context import RequestContext
from gateway.pipeline.headers import BUDGET_WARNING, header_safe, presented_key
from gateway.routing.policy import BudgetSignal

__all__ = [
    "FALLBACK_OUTPUT_CAP",
    "RESERVATION_TTL_S",
    "EnforceLimits",
    "ReserveBudget",
    "SettleBudget",
    "estimate_micros",
    "exceeded",
    "finish_reservation",
    "output_cap",
    "requested_output_cap",
    "reserve_budget",
]

log = logging.getLogger("gateway.budget")

# Output cap of a limited tenant's request when neither the request, the budget nor the tier
# sets one: no reservation (and no token count) may be unbounded. It is sent upstream too.
FALLBACK_OUTPUT_CAP = 4096
# A reservation not settled within this time (its process died) is released by the reaper; a
# request that was merely slow still settles its actual cost later (docs/budgets.md).
RESERVATION_TTL_S = 900.0

StoreOf = Callable[[], BudgetStore | None]


def _limited(tenant: TenantConfig) -> bool:
    return tenant.budget is not None or tenant.rate_limits is not None


def requested_output_cap(ctx: RequestContext) -> int | None:
    """The request's own cap: ``max_tokens`` / ``max_completion_tokens`` (the larger if both)."""
    request = ctx.request
    if request is None:
        return None
    caps = [c for c in (request.max_tokens, request.max_completion_tokens) if c is not None]
    return max(caps) if caps else None


def output_cap(ctx: RequestContext, route: str) -> int | None:
    """The most output a call to ``route`` may produce: the request's cap, else the budget's
    ``default_max_output_tokens``, else the tier's ``max_output_tokens``, else (for a tenant with
    a budget or rate limits) ``FALLBACK_OUTPUT_CAP``. The tier stage sends it upstream when the
    request set none, so what was reserved is what can be spent."""
    requested = requested_output_cap(ctx)
    if requested is not None:
        return requested
    tenant = ctx.runtime.tenant(ctx.tenant) if ctx.tenant is not None else None
    if tenant is not None and tenant.budget is not None:
        if tenant.budget.default_max_output_tokens is not None:
            return tenant.budget.default_max_output_tokens
    cap = ctx.runtime.output_cap(route)
    if cap is None and tenant is not None and _limited(tenant):
        return FALLBACK_OUTPUT_CAP
    return cap


def estimate_micros(ctx: RequestContext, route: str) -> int:
    """The most a call to ``route`` can cost (micro-USD, rounded up)."""
    price = ctx.runtime.loaded.tier_price(route)
    cap = output_cap(ctx, route) or 0
    usd = ctx.prompt_tokens * price.input_per_token + cap * price.output_per_token
    return math.ceil(usd * MICROS_PER_USD)


# -- wording ----------------------------------------------------------------------------------


def _amount(cfg: BudgetConfig, micros: int) -> str:
    """Micro-USD in the budget's currency, e.g. ``0.15 USD`` or ``1.0649 CNY``."""
    value = cfg.from_micros(micros).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    text = format(value.normalize(), "f")
    return f"{text} {cfg.currency}"


def describe(scope_key: str) -> str:
    """A limit's name for messages, from its counter key (``t/acme/model/gpt-4o/day/...``)."""
    parts = scope_key.split("/")
    period = {"day": "daily", "month": "monthly"}.get(parts[-2], parts[-2])
    if len(parts) > 4 and parts[2] == "model":
        return f"{period} limit for model {unquote(parts[3])}"
    if len(parts) > 4 and parts[2] == "user":
        return f"{period} limit per end user"
    return f"{period} limit"


def _setting(scope_key: str) -> str:
    """The config key that sets a limit, for "raise it" hints."""
    parts = scope_key.split("/")
    period = {"day": "daily", "month": "monthly"}.get(parts[-2], parts[-2])
    if len(parts) > 4 and parts[2] == "model":
        return f"budget.model_limits.{unquote(parts[3])}.{period}"
    if len(parts) > 4 and parts[2] == "user":
        return f"budget.user_limits.{period}"
    return f"budget.{period}_limit"


def _resets(scope: Scope, zone: str) -> str:
    if scope.resets_at is None:
        return "never resets"
    local = scope.resets_at.astimezone(ZoneInfo(zone))
    return f"resets at {local.isoformat(timespec='minutes')} ({zone})"


def _store_name(store: BudgetStore | None) -> str:
    return "SQLite" if store is None else store.backend_name


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``7s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def _store_down(
    request_id: str,
    headers: dict[str, str],
    store: BudgetStore | None,
    policy: OnBackendError,
    what: str,
    exc: BudgetBackendError,
) -> None:
    """Apply ``on_backend_error``: raise 503 (fail_closed) or let the request through, with a
    warning header in ``headers``."""
    name = _store_name(store)
    if policy == "fail_closed":
        raise BudgetUnavailable(
            f"The budget store ({name}) is unavailable and this tenant's {what} fail closed "
            f"(on_backend_error: fail_closed); try again shortly (request id {request_id}).",
            retry_after_s=1.0,
        ) from exc
    log.warning(
        "request %s: %s not enforced, the budget store (%s) is unavailable "
        "(on_backend_error: fail_open): %s",
        request_id,
        what,
        name,
        exc,
    )
    headers[BUDGET_WARNING] = f"budget store ({name}) unavailable; {what} not enforced"


# -- limits: rate limits and the soft limit, before routing ------------------------------------


class EnforceLimits:
    name = "limits"

    def __init__(self, store_of: StoreOf, *, rate_limits: bool = True) -> None:
        self._store_of = store_of
        # False for /v1/route/explain: asking must not use up the tenant's rate limits.
        self._rate_limits = rate_limits

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.tenant is not None and ctx.request is not None
        tenant = ctx.runtime.tenant(ctx.tenant)
        if tenant.rate_limits is None and tenant.budget is None:
            return  # the hot path of an unlimited tenant: no store call
        store = self._store_of()
        if tenant.rate_limits is not None and self._rate_limits:
            await self._rate_limit(ctx, store, tenant.rate_limits)
        budget = tenant.budget
        if budget is not None and budget.soft_limit is not None:
            await self._soft_limit(ctx, store, tenant, budget)

    async def exit(self, ctx: RequestContext) -> None:
        return None

    async def _rate_limit(
        self, ctx: RequestContext, store: BudgetStore | None, rates: RateLimitsConfig
    ) -> None:
        assert ctx.tenant is not None
        tenant = ctx.tenant
        tokens = ctx.prompt_tokens + max((output_cap(ctx, t) or 0) for t in ctx.runtime.tiers)
        hits: list[RateHit] = []
        labels: list[tuple[RateUnit, str]] = []
        key = presented_key(ctx.headers) if rates.per_key is not None else None
        # A stable, non-secret id of the key: a prefix of its SHA-256 digest.
        key_id = hash_key(key)[:16] if key else None
        for owner, limit, who in (
            (key_id, rates.per_key, "per key"),
            (None, rates.per_tenant, "per tenant"),
        ):
            if limit is None or (who == "per key" and key_id is None):
                continue
            if limit.requests_per_minute is not None:
                counter = rate_counter_key(tenant, "requests", owner)
                hits.append(RateHit(counter, limit.requests_per_minute))
                labels.append(("requests", who))
            if limit.tokens_per_minute is not None:
                counter = rate_counter_key(tenant, "tokens", owner)
                hits.append(RateHit(counter, limit.tokens_per_minute, amount=tokens))
                labels.append(("tokens", who))
        if not hits:
            return
        try:
            if store is None:
                raise BudgetBackendError("no budget store is open; restart the gateway")
            results = await store.hit_many(hits)
        except BudgetBackendError as exc:
            _store_down(
                ctx.request_id,
                ctx.response_headers,
                store,
                rates.on_backend_error,
                "rate limits",
                exc,
            )
            return
        self._headers(ctx, results, labels)
        refused = [
            (hit, result, label)
            for hit, result, label in zip(hits, results, labels, strict=True)
            if not result.allowed
        ]
        if refused:
            raise self._refusal(refused)

    @staticmethod
    def _headers(
        ctx: RequestContext,
        results: Sequence[RateResult],
        labels: Sequence[tuple[RateUnit, str]],
    ) -> None:
        unit: RateUnit
        for unit in ("requests", "tokens"):
            mine = [r for r, (u, _) in zip(results, labels, strict=True) if u == unit]
            if not mine:
                continue
            tightest = min(mine, key=lambda r: (r.remaining, -r.reset_s))
            ctx.response_headers[f"x-ratelimit-limit-{unit}"] = str(tightest.limit)
            ctx.response_headers[f"x-ratelimit-remaining-{unit}"] = str(tightest.remaining)
            ctx.response_headers[f"x-ratelimit-reset-{unit}"] = _duration(tightest.reset_s)

    @staticmethod
    def _refusal(refused: list[tuple[RateHit, RateResult, tuple[RateUnit, str]]]) -> RateLimited:
        retry = max(math.ceil(result.reset_s) for _, result, _ in refused)
        for hit, _, (unit, who) in refused:
            if unit == "tokens" and hit.amount > hit.limit:
                # Waiting cannot help: the request alone is above the limit.
                return RateLimited(
                    f"This request needs {hit.amount} tokens (prompt + max_tokens), more than "
                    f"the limit of {hit.limit} tokens per minute {who}; lower max_tokens or "
                    "shorten the prompt.",
                    retry_after_s=retry,
                    headers={"x-should-retry": "false"},
                )
        what = "; ".join(f"{hit.limit} {unit} per minute {who}" for hit, _, (unit, who) in refused)
        return RateLimited(
            f"Rate limit reached ({what}); try again in {retry} s.", retry_after_s=retry
        )

    async def _soft_limit(
        self,
        ctx: RequestContext,
        store: BudgetStore | None,
        tenant: TenantConfig,
        budget: BudgetConfig,
    ) -> None:
        assert ctx.tenant is not None and ctx.request is not None
        action = budget.effective_soft_action
        model: str | None = None
        if action == "downgrade" and "large" in ctx.runtime.tiers:
            # The large model's own limits matter too: downgrading is what spares them.
            large = ctx.runtime.tiers["large"].model
            model = large if large in budget.model_limits else None
        scopes = [
            s
            for s in budget_scopes(
                ctx.tenant,
                budget,
                model=model,
                user=ctx.request.user,
                now=ctx.received_at,
                tenant_timezone=tenant.timezone,
            )
            if s.limit_micros is not None
        ]
        if not scopes:
            return
        try:
            if store is None:
                raise BudgetBackendError("no budget store is open; restart the gateway")
            spent = await asyncio.gather(*(store.spent(s.key) for s in scopes))
        except BudgetBackendError as exc:
            _store_down(
                ctx.request_id,
                ctx.response_headers,
                store,
                budget.on_backend_error,
                "budget limits",
                exc,
            )
            return
        for scope, used in zip(scopes, spent, strict=True):
            assert scope.limit_micros is not None
            threshold = budget.soft_limit_micros(scope.limit_micros)
            if threshold is not None and used >= threshold:
                self._apply_soft(ctx, tenant, budget, ScopeState(scope, used))
                return

    @staticmethod
    def _apply_soft(
        ctx: RequestContext, tenant: TenantConfig, budget: BudgetConfig, state: ScopeState
    ) -> None:
        action = budget.effective_soft_action
        limit = state.limit_micros or 0
        share = state.used_share() or 0.0
        reason = f"soft limit: {share:.0%} of the {describe(state.scope.key)} used"
        ctx.response_headers[BUDGET_WARNING] = header_safe(
            f"{reason} ({_amount(budget, state.spent_micros)} of {_amount(budget, limit)}); "
            f"action: {action}"
        )
        if action == "downgrade":
            ctx.budget_signal = BudgetSignal(downgrade_to="small", reason=reason)
        elif action == "cache_only":
            zone = budget.timezone or tenant.timezone
            ctx.cache_only = BudgetExceeded(
                f"Budget {reason}: only cached answers are served until the limit "
                f"{_resets(state.scope, zone)}.",
                retry_after_s=retry_after_s(state, datetime.now(UTC)),
            )


# -- reserve: the atomic reservation, after routing ---------------------------------------------

# Delays between attempts to settle a reservation while the store is unavailable (~1 min).
SETTLE_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


async def finish_reservation(store: BudgetStore, reservation: str, amount: int) -> None:
    """Settle to ``amount`` (> 0), or release (0: nothing was generated)."""
    if amount > 0:
        await store.settle(reservation, amount)
    else:
        await store.release(reservation)


async def _finish_later(store: BudgetStore, reservation: str, amount: int, request_id: str) -> None:
    for delay in SETTLE_RETRY_DELAYS_S:
        await asyncio.sleep(delay)
        try:
            await finish_reservation(store, reservation, amount)
        except BudgetBackendError:
            continue
        log.warning("request %s: budget reservation settled on a retry", request_id)
        return
    log.error(
        "request %s: gave up settling its budget reservation (%d µUSD); the reaper releases it "
        "after %.0f s, and the ledger keeps the cost",
        request_id,
        amount,
        RESERVATION_TTL_S,
    )


async def reserve_budget(
    store: BudgetStore | None,
    *,
    tenant_name: str,
    tenant: TenantConfig,
    budget: BudgetConfig,
    reservation_id: str,
    model: str | None,
    user: str | None,
    now: datetime,
    estimate: int,
    headers: dict[str, str],
) -> ReserveResult | None:
    """Reserve ``estimate`` against every limit of the request's scopes (its tenant's day and
    month, ``model``'s and ``user``'s limits) at ``now``. None when the store is down and the
    tenant fails open (a warning goes into ``headers``); raises ``BudgetUnavailable`` when it
    fails closed. A refused result is the caller's to turn into ``exceeded(...)``."""
    scopes = budget_scopes(
        tenant_name, budget, model=model, user=user, now=now, tenant_timezone=tenant.timezone
    )
    try:
        if store is None:
            raise BudgetBackendError("no budget store is open; restart the gateway")
        return await store.reserve(reservation_id, scopes, estimate, RESERVATION_TTL_S)
    except BudgetBackendError as exc:
        _store_down(reservation_id, headers, store, budget.on_backend_error, "budget limits", exc)
        return None


def exceeded(
    tenant_name: str,
    tenant: TenantConfig,
    budget: BudgetConfig,
    blocked: ScopeState,
    estimate: int,
) -> BudgetExceeded:
    """The 429 for a refused reservation: which limit, what is spent, when it resets, the fix."""
    scope = blocked.scope
    limit = scope.limit_micros or 0
    zone = budget.timezone or tenant.timezone
    retry = retry_after_s(blocked, datetime.now(UTC))
    if estimate > limit:
        # Not a matter of waiting: this request alone could cost more than the limit.
        return BudgetExceeded(
            f"This request could cost up to {_amount(budget, estimate)} (its prompt and "
            f"max_tokens, on the most expensive tier it may use), more than the "
            f"{describe(scope.key)} of {_amount(budget, limit)} for tenant {tenant_name!r}; "
            "lower max_tokens, or raise "
            f"`{_setting(scope.key)}` in the gateway's config.",
            retry_after_s=retry,
        )
    return BudgetExceeded(
        f"Budget exceeded: the {describe(scope.key)} of {_amount(budget, limit)} for tenant "
        f"{tenant_name!r} is used ({_amount(budget, blocked.spent_micros)} spent or "
        f"reserved; this request needs up to {_amount(budget, estimate)}). It "
        f"{_resets(scope, zone)}; to allow more, raise `{_setting(scope.key)}` in the "
        "gateway's config.",
        retry_after_s=retry,
    )


class ReserveBudget:
    """``enter``: reserve what the request may cost, right before a tier is called (after every
    cache layer: an answer from a cache costs nothing and reserves nothing). ``SettleBudget``,
    earlier in the list, settles it on the way out."""

    name = "reserve"

    def __init__(self, store_of: StoreOf) -> None:
        self._store_of = store_of

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.tenant is not None and ctx.request is not None and ctx.decision is not None
        tenant = ctx.runtime.tenant(ctx.tenant)
        budget = tenant.budget
        if budget is None or ctx.cache_only is not None:
            return  # unlimited, or no tier will be called: nothing to reserve
        decision = ctx.decision
        estimates = {r: estimate_micros(ctx, r) for r in (decision.route, *decision.fallbacks)}
        estimate = max(estimates.values())
        primary = estimates[decision.route]
        ceiling = budget.request_limit_micros
        if ceiling is not None and estimate > ceiling:
            if primary > ceiling:
                raise self._over_ceiling(ctx, budget, estimates, ceiling)
            # The route fits the ceiling, a dearer fallback does not: serve without that one.
            self._drop_dearer_fallbacks(ctx, estimates, "the per-request limit")
            estimate = primary

        async def reserve(amount: int) -> ReserveResult | None:
            assert ctx.tenant is not None and ctx.request is not None
            return await reserve_budget(
                self._store_of(),
                tenant_name=ctx.tenant,
                tenant=tenant,
                budget=budget,
                reservation_id=ctx.request_id,
                model=ctx.runtime.tiers[decision.route].model,
                user=ctx.request.user,
                now=ctx.received_at,
                estimate=amount,
                headers=ctx.response_headers,
            )

        result = await reserve(estimate)
        if result is not None and not result.ok and primary < estimate:
            # No room for what a dearer fallback could cost, but maybe for the route itself
            # (a refused reservation charged nothing, so its id can be used again).
            result, estimate = await reserve(primary), primary
            if result is not None and result.ok:
                self._drop_dearer_fallbacks(ctx, estimates, "the budget left")
        if result is None:
            return  # the store is down and the tenant fails open: served unmetered
        if not result.ok:
            assert result.blocked is not None
            error = exceeded(ctx.tenant, tenant, budget, result.blocked, estimate)
            if budget.hard_action == "cache_only":
                ctx.cache_only = error
                ctx.response_headers[BUDGET_WARNING] = header_safe(
                    f"hard limit: the {describe(result.blocked.scope.key)} is used; "
                    "only cached answers are served"
                )
                return
            raise error
        ctx.reservation = ctx.request_id
        if budget.soft_limit is not None and BUDGET_WARNING not in ctx.response_headers:
            # A model's limit, or this very request, crossed the soft limit: say so.
            over = result.over_share(budget.soft_limit)
            if over is not None:
                share = over.used_share() or 0.0
                ctx.response_headers[BUDGET_WARNING] = header_safe(
                    f"soft limit: {share:.0%} of the {describe(over.scope.key)} used "
                    f"({_amount(budget, over.spent_micros)} of "
                    f"{_amount(budget, over.limit_micros or 0)})"
                )

    async def exit(self, ctx: RequestContext) -> None:
        return None  # SettleBudget settles: it runs after `settle` priced the answer

    @staticmethod
    def _drop_dearer_fallbacks(ctx: RequestContext, estimates: dict[str, int], why: str) -> None:
        """Keep only fallbacks that cost no more than the route (what was reserved)."""
        decision = ctx.decision
        assert decision is not None
        primary = estimates[decision.route]
        kept = tuple(r for r in decision.fallbacks if estimates[r] <= primary)
        dropped = [r for r in decision.fallbacks if r not in kept]
        reason = f"budget: no fallback to {', '.join(dropped)} (its cost is above {why})"
        ctx.decision = replace(decision, fallbacks=kept, reasons=(*decision.reasons, reason))
        ctx.response_headers["x-switchboard-reason"] = header_safe("; ".join(ctx.decision.reasons))

    @staticmethod
    def _over_ceiling(
        ctx: RequestContext, budget: BudgetConfig, estimates: dict[str, int], ceiling: int
    ) -> InvalidRequest:
        runtime = ctx.runtime
        limit_usd = Decimal(ceiling) / MICROS_PER_USD
        fits: list[int] = []
        for route in estimates:
            price = runtime.loaded.tier_price(route)
            room = limit_usd - ctx.prompt_tokens * price.input_per_token
            if price.output_per_token > 0:
                fits.append(math.floor(room / price.output_per_token))
        worst = max(estimates, key=lambda r: estimates[r])
        most = min(fits) if fits else 0
        hint = (
            f"lower max_tokens to {most} or less"
            if most >= 1
            else "shorten the prompt (its input alone is above the limit)"
        )
        return InvalidRequest(
            f"This request could cost up to {_amount(budget, estimates[worst])} "
            f"({ctx.prompt_tokens} prompt tokens and up to {output_cap(ctx, worst)} output tokens "
            f"on {runtime.tiers[worst].model}), above this tenant's per-request limit of "
            f"{_amount(budget, ceiling)} (budget.request_limit); {hint}.",
            param="max_tokens",
            code="request_over_budget_limit",
        )


class SettleBudget:
    """``exit``: commit the ledger record, then settle the reservation ``reserve`` made to the
    request's cost (``ctx.cost_micros``, which the ``settle`` stage's exit computed: it is later
    in the list, so its exit runs first), or release it when nothing was generated."""

    name = "settle_budget"

    def __init__(
        self,
        store_of: StoreOf,
        *,
        before_settle: Callable[[RequestContext], Awaitable[None]] | None = None,
    ) -> None:
        self._store_of = store_of
        # The ledger record is committed before the counters move, so after a kill -9 a
        # counter never holds spend the ledger lacks (gateway.reconcile repairs the other
        # way round at the next start).
        self._before_settle = before_settle
        # Settles that failed and are being retried (kept so they are not garbage-collected).
        self._retries: set[asyncio.Task[None]] = set()

    async def enter(self, ctx: RequestContext) -> None:
        return None

    async def exit(self, ctx: RequestContext) -> None:
        reservation = ctx.reservation
        if reservation is None:
            return
        ctx.reservation = None
        store = self._store_of()
        if store is None:
            return
        if self._before_settle is not None:
            try:
                await self._before_settle(ctx)
            except Exception:  # noqa: BLE001 - a ledger bug must not leave the budget unsettled
                log.exception("request %s: recording before the settle failed", ctx.request_id)
        # What was generated, also for a failed or abandoned answer; nothing: give it back.
        amount = ctx.cost_micros
        try:
            await finish_reservation(store, reservation, amount)
        except BudgetBackendError as exc:
            # Retried in the background, so the answer does not wait for the store to recover.
            log.warning(
                "request %s: could not settle its budget reservation (%s); retrying in the "
                "background",
                ctx.request_id,
                exc,
            )
            task = asyncio.create_task(_finish_later(store, reservation, amount, ctx.request_id))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
