"""The ``handoff`` stage: should a person take this conversation over? Read before anything
can answer (approved answers, caches, tiers), on the customer's own words.

Per tenant with ``safety.handoff.enabled`` (docs/safety.md). On a signal the answer (and an
error, if the request fails later) carries ``x-switchboard-handoff: <reason>`` and the ledger
records the reason; then the tenant's ``action``:

- ``none``: the header only; the request goes on as usual;
- ``large``: the router sends it to the large tier (reason ``handoff: <reason>``);
- ``answer``: the gateway answers with the tenant's approved holding text, as a cache hit is
  answered: route ``handoff``, cost 0, no model called.

Only the signal's reason leaves this stage, never what matched (it may quote the customer).
"""

from __future__ import annotations

import time

from gateway.cache.stage import ReplayStream
from gateway.pipeline.context import RequestContext
from gateway.pipeline.headers import header_safe
from gateway.pipeline.streaming import usage_body
from gateway.safety.handoff import detect_handoff
from gateway.tiers.base import Completion
from gateway.usage import Usage

HANDOFF_HEADER = "x-switchboard-handoff"
HANDOFF_ROUTE = "handoff"


class HandoffStage:
    name = "handoff"

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.request is not None and ctx.tenant is not None
        policy = ctx.runtime.tenant(ctx.tenant).safety.handoff
        if not policy.enabled:
            return
        signal = detect_handoff(ctx.payload["messages"], policy)
        if signal is None:
            return
        reason = signal.header_value
        ctx.handoff = reason
        # Intent names come from the config and may be Chinese: percent-encoded in the header.
        ctx.response_headers[HANDOFF_HEADER] = header_safe(reason)
        if policy.action == "large":
            ctx.escalate = f"handoff: {reason}"
        elif policy.action == "answer" and policy.answer:
            self._answer(ctx, policy.answer, reason)

    async def exit(self, ctx: RequestContext) -> None:
        return None

    @staticmethod
    def _answer(ctx: RequestContext, text: str, reason: str) -> None:
        assert ctx.request is not None and ctx.tenant is not None
        runtime = ctx.runtime
        model = ctx.request.model
        completion_tokens = runtime.tokens.count_text(text, model)
        usage = Usage(
            prompt_tokens=ctx.prompt_tokens, completion_tokens=completion_tokens, estimated=True
        )
        ctx.served_by = HANDOFF_ROUTE
        ctx.model = model
        ctx.usage = usage
        # Answered for free, like a cache hit: the saving is what the baseline model would cost.
        ctx.cost_micros = 0
        ctx.baseline_cost_micros = runtime.prices.cost_micros(
            runtime.baseline_model(ctx.tenant), usage
        )
        ctx.response_headers.update(
            {
                "x-switchboard-route": HANDOFF_ROUTE,
                "x-switchboard-model": model,
                "x-switchboard-reason": header_safe(f"handoff: {reason}; approved holding answer"),
                "x-switchboard-cost-usd": "0.000000",
            }
        )
        chunk_id = f"chatcmpl-{ctx.request_id}"
        created = int(time.time())
        if ctx.request.wants_stream:
            ctx.stream = ReplayStream(
                chunk_id=chunk_id, created=created, model=model, pieces=[text], usage=usage
            )
            return
        body = {
            "id": chunk_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage_body(usage),
        }
        ctx.completion = Completion(body=body, model=model, usage=usage)
