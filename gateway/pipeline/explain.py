"""``POST /v1/route/explain``: the routing decision for a chat body, without calling any model.

Runs the same stages a real request runs up to the decision (parse, count, the soft budget
limit, handoff, route), so what it says is what the gateway would do now, with this config, tier
health and budget state. It counts nothing against rate limits and reserves nothing.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.budget import BudgetStore
from gateway.pipeline.budget import EnforceLimits
from gateway.pipeline.cascade import cascade_for
from gateway.pipeline.context import RequestContext
from gateway.pipeline.handoff import HANDOFF_ROUTE, HandoffStage
from gateway.pipeline.headers import BUDGET_WARNING
from gateway.pipeline.stages import CountTokens, Parse, Route, Stage
from gateway.runtime import Runtime


async def explain(
    runtime: Runtime, tenant: str, body: bytes, *, budget_store: BudgetStore | None = None
) -> dict[str, Any]:
    """The decision for ``body`` as ``tenant`` would get it; raises GatewayError for bad input."""
    stages: tuple[Stage, ...] = (
        Parse(),
        CountTokens(),
        EnforceLimits(lambda: budget_store, rate_limits=False),
        HandoffStage(),
        Route(claim_trial=False),
    )

    async def read_body() -> bytes:
        return body

    ctx = RequestContext(
        runtime=runtime, request_id=os.urandom(16).hex(), headers={}, read_body=read_body
    )
    ctx.tenant = tenant
    for stage in stages:
        await stage.enter(ctx)
    decision = ctx.decision
    assert decision is not None  # Route sets it or raises
    return {
        "object": "route.explanation",
        "tenant": tenant,
        "route": decision.route,
        "model": runtime.tiers[decision.route].model,
        "pinned": decision.pinned,
        "fallbacks": list(decision.fallbacks),
        "reasons": list(decision.reasons),
        "score": decision.score,
        "threshold": decision.threshold,
        "top_features": [{"name": n, "contribution": v} for n, v in decision.top_features],
        "features": dict(decision.features),
        "unhealthy_tiers": sorted(runtime.health.unhealthy_now()),
        # Past a soft limit: what it does (None: within budget, or no budget).
        "budget_warning": ctx.response_headers.get(BUDGET_WARNING),
        # The handoff signal (x-switchboard-handoff), and whether the tenant's holding answer
        # would answer instead of the route above.
        "handoff": ctx.handoff,
        "holding_answer": ctx.served_by == HANDOFF_ROUTE,
        # The small-first cascade, when it would judge this request's answer (None: it would not).
        "cascade": _cascade(ctx),
    }


def _cascade(ctx: RequestContext) -> dict[str, Any] | None:
    if ctx.served_by is not None or ctx.decision is None or ctx.request is None:
        return None  # answered without a model (a holding answer)
    cfg = cascade_for(ctx, ctx.decision.route)
    if cfg is None:
        return None
    return {
        "threshold": cfg.threshold,
        "escalates_to": cfg.large_tier,
        # A stream is judged only when it ends within this many tokens.
        "stream_buffer_tokens": cfg.stream_buffer_tokens if ctx.request.wants_stream else None,
    }
