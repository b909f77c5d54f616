"""The stages of the request pipeline, in the order ``default_stages`` lists them.

Each stage is a plain object with ``name``, ``enter(ctx)`` and ``exit(ctx)``. ``enter`` runs in
list order before the answer; it may raise a ``GatewayError`` to stop the request. ``exit`` runs
in reverse order once the answer is finished (complete, failed, or abandoned by the client), for
every stage whose ``enter`` ran, so accounting stages see every request, errors included.

    ledger      exit: one ledger record per request, whatever happened
    auth        enter: API key → tenant (401 otherwise)
    parse       enter: JSON body → validated ChatRequest (400 otherwise)
    count       enter: prompt tokens with tiktoken (offline)
    limits      enter: rate limits (429 + x-ratelimit-* headers) and the soft budget limit
                (a downgrade signal for the router, cache only, or a warning header)
    handoff     enter: the customer asks for a person, threatens legal action, is angry, ...:
                x-switchboard-handoff, then the tenant's action (header only, the large tier,
                or an approved holding answer that ends the walk)
    mask        enter: the request masked for hosted tiers (tenants that mask); the tier
                stage sends it to every tier that is not exempt; exit: the answer's
                placeholders restored (streams: in the relay)
    route       enter: the routing decision and its headers
    reserve     enter: reserve the most the request can cost against every budget limit, in one
                atomic step (429 insufficient_quota, or cache only; 400 above request_limit)
                exit: settle the reservation to ctx.cost_micros, or release it (nothing made)
    settle      exit: usage (upstream's or counted) → cost, savings, cost header
    cache       enter: a hit answers here; exit: stores a complete tier answer (masked)
    answers     enter: the tenant's approved answer when the matcher names one intent
                (gateway.pipeline.answers)
    semantic    enter: an earlier answer to a request that means the same; exit: stores a
                complete tier answer (masked, in a worker thread) (gateway.pipeline.semantic)
    tier        enter: call the chosen tier (with the output cap the reservation assumed);
                sets ctx.completion or ctx.stream; a cache-only request that got here is refused;
                a tenant's cascade (small first, large when unsure) runs here
                (gateway.pipeline.cascade)

``reserve`` comes before ``settle`` in the list so that on the way out (reverse order) ``settle``
has priced the answer before ``reserve`` settles it. The budget stages live in
``gateway.pipeline.budget``; a tenant with no budget and no rate limits makes no store call.
The three answer-reuse layers (exact cache, approved answers, semantic cache) come in that
order: the cheapest and surest first; any of them ends the walk with route ``cache``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gateway.budget import BudgetStore
from gateway.cache.stage import CacheStage
from gateway.cache.store import CacheStore
from gateway.chat import parse_chat_request
from gateway.errors import AuthenticationFailed, LedgerUnavailable, RateLimited, UpstreamError
from gateway.ledger import LedgerRecord, SqliteLedger
from gateway.money import format_usd
from gateway.pipeline.answers import AnswersStage
from gateway.pipeline.budget import (
    EnforceLimits,
    ReserveBudget,
    SettleBudget,
    output_cap,
    requested_output_cap,
)
from gateway.pipeline.cascade import answer as cascade_answer
from gateway.pipeline.cascade import cascade_for
from gateway.pipeline.context import RequestContext
from gateway.pipeline.handoff import HandoffStage
from gateway.pipeline.headers import header_safe
from gateway.pipeline.headers import presented_key as presented_key  # the HTTP layer's import
from gateway.pipeline.masking import MASKED_HEADER, MaskStage, last_user_text, mask_request
from gateway.pipeline.semantic import SemanticStage
from gateway.pipeline.streaming import counted_usage, usage_body
from gateway.routing.policy import RouteRequest, decide
from gateway.tiers.base import start_stream
from gateway.usage import Usage

if TYPE_CHECKING:
    # Only an annotation here: the semantic cache imports numpy (~15 MiB of resident memory).
    from gateway.cache.semantic import SemanticCache

log = logging.getLogger("gateway.pipeline")

_NONE: Mapping[str, Any] = {}


class Stage(Protocol):
    name: str

    async def enter(self, ctx: RequestContext) -> None: ...

    async def exit(self, ctx: RequestContext) -> None: ...


class _Stage:
    """Default no-op halves, so a stage writes only the half it needs."""

    name = "stage"

    async def enter(self, ctx: RequestContext) -> None:
        return None

    async def exit(self, ctx: RequestContext) -> None:
        return None


class Authenticate(_Stage):
    name = "auth"

    async def enter(self, ctx: RequestContext) -> None:
        key = presented_key(ctx.headers)
        if key is None:
            raise AuthenticationFailed(
                "Missing API key: send `Authorization: Bearer <key>` (a tenant key from the "
                "gateway's config; `gateway keys create --tenant NAME` makes one)."
            )
        tenant = ctx.runtime.keys.tenant_for(key)
        if tenant is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        ctx.tenant = tenant


class Parse(_Stage):
    name = "parse"

    async def enter(self, ctx: RequestContext) -> None:
        ctx.request, ctx.payload = parse_chat_request(await ctx.read_body())


class CountTokens(_Stage):
    name = "count"

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.request is not None
        messages = ctx.payload["messages"]
        ctx.prompt_tokens = ctx.runtime.tokens.count_messages(messages, ctx.request.model)


class Route(_Stage):
    name = "route"

    def __init__(self, *, claim_trial: bool = True) -> None:
        # False for /v1/route/explain: asking must not use up an unhealthy tier's trial request.
        self.claim_trial = claim_trial

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.request is not None and ctx.tenant is not None
        runtime = ctx.runtime
        request = ctx.request
        route_request = RouteRequest(
            requested_model=request.model,
            prompt_tokens=ctx.prompt_tokens,
            last_user_text=request.last_user_text(),
            turns=sum(1 for m in request.messages if m.role == "user"),
            has_tools=bool(request.tools),
            has_images=request.has_images(),
            wants_response_format=ctx.payload.get("response_format") is not None,
            messages=ctx.payload["messages"],
            quote_matches=ctx.tenant not in runtime.masking,
        )
        decision = decide(
            route_request,
            runtime.tenant(ctx.tenant),
            runtime.routing_state,
            runtime.config,
            unhealthy=(
                runtime.health.unhealthy() if self.claim_trial else runtime.health.unhealthy_now()
            ),
            budget=ctx.budget_signal,
            escalate=ctx.escalate,
        )
        ctx.decision = decision
        ctx.model = runtime.tiers[decision.route].model
        ctx.response_headers["x-switchboard-route"] = decision.route
        ctx.response_headers["x-switchboard-model"] = ctx.model
        ctx.response_headers["x-switchboard-reason"] = header_safe("; ".join(decision.reasons))
        if decision.score is not None:
            ctx.response_headers["x-switchboard-difficulty"] = f"{decision.score:.3f}"


class Settle(_Stage):
    """Turns what was generated into tokens and money; `reserve`'s exit then settles the budget."""

    name = "settle"

    async def exit(self, ctx: RequestContext) -> None:
        if ctx.decision is None or ctx.tenant is None:
            return  # failed before routing: nothing was generated, nothing costs
        runtime = ctx.runtime
        usage = ctx.usage
        if usage is None:
            usage = ctx.usage = counted_usage(ctx)
            if ctx.completion is not None:
                # The client expects `usage` in every answer; give it ours, as we bill by it.
                ctx.completion.body["usage"] = usage_body(usage)
        if ctx.route == "cache":
            ctx.cost_micros = 0  # answered for free: the saving is the whole baseline price
        else:
            tier_model = runtime.tiers[ctx.route].model
            ctx.cost_micros = runtime.prices.cost_micros(tier_model, usage)
            if ctx.cascade is not None:  # a small answer the cascade discarded was paid for too
                ctx.cost_micros += ctx.cascade.discarded_micros
        baseline_model = runtime.baseline_model(ctx.tenant)
        ctx.baseline_cost_micros = runtime.prices.cost_micros(baseline_model, usage)
        ctx.response_headers["x-switchboard-cost-usd"] = format_usd(ctx.cost_micros)


class CallTier(_Stage):
    """Calls the chosen tier; if it fails, is full or times out before its first byte, the
    decision's fallbacks in order. Every failed attempt is kept for the ledger."""

    name = "tier"

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.request is not None and ctx.decision is not None
        if ctx.cache_only is not None:
            raise ctx.cache_only  # the budget allows cached answers only, and this was a miss
        candidates = (ctx.decision.route, *ctx.decision.fallbacks)
        for i, route in enumerate(candidates):
            try:
                served = await self._answer(ctx, route)
            except (UpstreamError, RateLimited) as exc:
                ctx.runtime.health.record_failure(route)
                ctx.attempts.append(f"{route}: {exc.status} {exc.code}: {exc.message}")
                if i + 1 == len(candidates):
                    raise
                log.warning(
                    "request %s: %s tier failed (%s); falling back to %s",
                    ctx.request_id,
                    route,
                    exc.code,
                    candidates[i + 1],
                )
                continue
            ctx.runtime.health.record_success(route)
            ctx.served_by = served
            if served != route:  # the cascade escalated (gateway.pipeline.cascade)
                ctx.response_headers["x-switchboard-route"] = served
            elif i > 0:
                ctx.response_headers["x-switchboard-route"] = route
                ctx.response_headers["x-switchboard-fallback"] = header_safe(
                    " -> ".join(candidates[: i + 1])
                )
            return

    async def _answer(self, ctx: RequestContext, route: str) -> str:
        """Call ``route`` (through the tenant's cascade when it has one); the tier that
        answered."""
        cfg = cascade_for(ctx, route)
        if cfg is None:
            await self._call(ctx, route)
            return route
        return await cascade_answer(ctx, cfg, self._call)

    @staticmethod
    async def _call(ctx: RequestContext, route: str, extra: Mapping[str, Any] = _NONE) -> None:
        """Call one tier; ``extra``: payload fields the gateway adds (the cascade's logprobs)."""
        assert ctx.request is not None
        tier = ctx.runtime.tiers[route]
        masking = ctx.masking
        if masking is not None and masking.masks(route):
            # What leaves for this tier: placeholders instead of personal values.
            payload = dict(masking.payload)
            masking.answer_masked = True
            masked = masking.header_value()
            if masked is not None:
                ctx.response_headers[MASKED_HEADER] = masked
        else:
            payload = dict(ctx.payload)
            if masking is not None:
                masking.answer_masked = False
                ctx.response_headers.pop(MASKED_HEADER, None)
        payload.update(extra)
        payload["model"] = tier.model
        cap = output_cap(ctx, route)
        if cap is not None and requested_output_cap(ctx) is None:
            # Bound every call's cost with the cap the budget reservation assumed.
            payload.pop("max_completion_tokens", None)
            payload["max_tokens"] = cap
        ctx.model = tier.model
        ctx.response_headers["x-switchboard-model"] = tier.model
        if ctx.request.wants_stream:
            options = payload.get("stream_options")
            # Always ask for the usage chunk: it is what we bill by. The client gets it only if
            # it asked (see gateway.pipeline.streaming).
            payload["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
            ctx.stream = await start_stream(tier, payload)
        else:
            completion = await tier.complete(payload)
            ctx.completion = completion
            ctx.model = completion.model
            ctx.usage = completion.usage
            ctx.response_headers["x-switchboard-model"] = completion.model


class RecordInLedger(_Stage):
    """One committed ledger record per authenticated request, before its answer ends.

    ``exit`` waits (at most ``COMMIT_WAIT_S``) until the record is committed, so the client's
    last byte never precedes it: a ``kill -9`` loses no answered request. While the ledger
    cannot commit, ``enter`` refuses new requests with 503 ``ledger_unavailable``: nothing is
    served that could not be billed. Details: docs/reliability.md.
    """

    name = "ledger"

    async def enter(self, ctx: RequestContext) -> None:
        ledger = ctx.runtime.ledger
        if isinstance(ledger, SqliteLedger) and ledger.failing:
            raise LedgerUnavailable(
                f"The spend ledger ({ledger.path}) cannot be written (disk full, read-only or "
                "locked by another process); requests are refused until it can, so that none "
                "goes unrecorded. Check the data directory (SWITCHBOARD_DATA_DIR / --data-dir)."
            )

    async def exit(self, ctx: RequestContext) -> None:
        await self.record(ctx)

    async def record(self, ctx: RequestContext) -> None:
        """Record ``ctx`` once and wait for the commit (the reserve stage calls it before it
        settles the budget, so counters never run ahead of the ledger)."""
        if ctx.tenant is None or ctx.recorded:
            return  # unauthenticated: nobody to bill, and strangers must not grow the ledger
        ctx.recorded = True
        runtime = ctx.runtime
        request = ctx.request
        decision = ctx.decision
        usage = ctx.usage or Usage()
        store_text = request is not None and runtime.tenant(ctx.tenant).store_request_text
        record = LedgerRecord(
            request_id=ctx.request_id,
            ts=ctx.received_at,
            tenant=ctx.tenant,
            requested_model=request.model if request else "",
            route=ctx.route,
            model=ctx.model if decision else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_micros=ctx.cost_micros,
            large_cost_micros=ctx.baseline_cost_micros,
            latency_ms=ctx.elapsed_ms(),
            status=ctx.status,
            stream=bool(request and request.wants_stream),
            cache_hit=ctx.route == "cache",
            usage_estimated=usage.estimated,
            error_code=ctx.error.code if ctx.error else None,
            end_user=request.user if request else None,
            reasons=decision.reasons if decision else (),
            attempts=tuple(ctx.attempts),
            features=decision.features if decision else {},
            request_text=_request_text(ctx) if store_text else None,
            handoff=ctx.handoff,
            cache_layer=ctx.cache_layer,
            intent=ctx.intent,
            cascade=ctx.cascade.outcome if ctx.cascade else None,
        )
        ledger = runtime.ledger
        try:
            if not isinstance(ledger, SqliteLedger):
                ledger.record(record)
                return
            committed = ledger.commit_soon(record)
        except Exception:  # noqa: BLE001 - the answer is already out; never fail it over accounting
            log.exception("could not record request %s in the ledger", ctx.request_id)
            return
        await _committed(committed, ledger, ctx.request_id)


# How long an answer waits for its record's commit; past it the answer goes out and the record
# stays queued (written when the ledger recovers, lost only if the process dies first).
COMMIT_WAIT_S = 30.0


async def _committed(
    committed: asyncio.Future[None], ledger: SqliteLedger, request_id: str
) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(committed), COMMIT_WAIT_S)
    except TimeoutError:
        log.error(
            "request %s answered before its ledger record was committed (%s cannot commit for "
            "%gs); the record stays queued and is written when the ledger recovers",
            request_id,
            ledger.path,
            COMMIT_WAIT_S,
        )


def _request_text(ctx: RequestContext) -> str | None:
    """The last user message for the ledger: masked when the tenant masks personal data."""
    if ctx.request is None or ctx.tenant is None:
        return None
    masking = ctx.masking
    tenant = ctx.runtime.masking.get(ctx.tenant)
    if masking is None and tenant is not None:
        # Answered before the mask stage ran (a handoff's holding answer): mask it here.
        masking = mask_request(tenant.masker, tenant.exempt_tiers, ctx.payload)
    if masking is not None:
        return last_user_text(masking.payload)
    return ctx.request.last_user_text()


def default_stages(
    cache_store: CacheStore | None = None,
    *,
    budget_store: Callable[[], BudgetStore | None] = lambda: None,
    semantic_cache: Callable[[], SemanticCache | None] = lambda: None,
) -> list[Stage]:
    """The pipeline's stages; ``budget_store`` and ``semantic_cache`` give the current store and
    cache (either may be opened by a config reload, after the stages were built)."""
    ledger = RecordInLedger()
    return [
        ledger,
        Authenticate(),
        Parse(),
        CountTokens(),
        EnforceLimits(budget_store),
        # Before anything can answer: "转人工，我的快递到哪了" is a handoff first; before routing,
        # which it may send to the large tier.
        HandoffStage(),
        # Before anything else can answer (approved answers, caches) or route: they key and
        # guard on the masked request. Its exit (restoring the answer) runs after the cache's,
        # which stores the answer masked.
        MaskStage(),
        Route(),
        # Before settle: exits run in reverse, so settle prices the answer before the budget
        # reservation is settled to it.
        SettleBudget(budget_store, before_settle=ledger.record),
        Settle(),
        # After routing (which checks the tenant may use the model) and before any tier.
        *([CacheStage(cache_store)] if cache_store is not None else []),
        # After the exact cache (cheaper, and exact), before any tier; approved answers first:
        # people decided what they say, the semantic cache only repeats a model.
        AnswersStage(),
        SemanticStage(semantic_cache),
        # Last before the tier: a cached or approved answer costs nothing and reserves nothing.
        ReserveBudget(budget_store),
        CallTier(),
    ]
