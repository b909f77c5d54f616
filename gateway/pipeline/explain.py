"""``POST /v1/route/explain``: the routing decision for a chat body, without calling any model.

Runs the same stages a real request runs up to the decision (parse, count, route), so what it
says is what the gateway would do now, with this config, tier health and budget state.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.pipeline.context import RequestContext
from gateway.pipeline.stages import CountTokens, Parse, Route, Stage
from gateway.runtime import Runtime

_STAGES: tuple[Stage, ...] = (Parse(), CountTokens(), Route(claim_trial=False))


async def explain(runtime: Runtime, tenant: str, body: bytes) -> dict[str, Any]:
    """The decision for ``body`` as ``tenant`` would get it; raises GatewayError for bad input."""

    async def read_body() -> bytes:
        return body

    ctx = RequestContext(
        runtime=runtime, request_id=os.urandom(16).hex(), headers={}, read_body=read_body
    )
    ctx.tenant = tenant
    for stage in _STAGES:
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
    }
