"""The ``answers`` stage: the tenant's approved answer for a known intent, no model asked.

Per tenant with ``tenants.NAME.answers`` (docs/caching.md). After the exact cache and before the
semantic cache: the matcher (``gateway.answers``) reads the last user message (masked, for a
tenant that masks) and either names one intent with enough confidence or abstains. On a match the
gateway answers with the approved text, its placeholders filled from the config's ``values``
(the others are left as ``{name}`` for the bot, and named in ``x-switchboard-placeholders``), as
a cache hit is answered: route ``cache``, cost 0, the baseline price as the saving.

Never for: a handoff (the handoff stage decides what such a request gets), a request the exact
cache would not store either (tools, n > 1, images, ...: ``uncacheable_reason``), one that asks
for structured output (``response_format`` other than text), one with earlier turns unless
``multi_turn``, or one sent with ``x-switchboard-cache: no-cache``.

Headers on a match: ``x-switchboard-route: cache``, ``x-switchboard-cache: hit``,
``x-switchboard-cache-layer: answers``, ``x-switchboard-intent`` (percent-encoded when not
ASCII); otherwise ``x-switchboard-answers`` says why not (``abstained: threshold``,
``bypass: multi-turn``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.cache.key import uncacheable_reason
from gateway.cache.stage import (
    CACHE_HEADER,
    CACHE_LAYER_HEADER,
    CACHE_REASON_HEADER,
    ReplayStream,
)
from gateway.pipeline.context import RequestContext
from gateway.pipeline.headers import header_safe
from gateway.pipeline.masking import last_user_text
from gateway.pipeline.streaming import usage_body
from gateway.tiers.base import Completion
from gateway.usage import Usage

if TYPE_CHECKING:
    # The matcher imports numpy (~15 MiB of resident memory): imported by AnswersStage only once
    # a tenant's answers are loaded, never in a gateway whose tenants have no `answers`.
    from gateway.answers.matcher import Match

ANSWERS_HEADER = "x-switchboard-answers"
INTENT_HEADER = "x-switchboard-intent"
PLACEHOLDERS_HEADER = "x-switchboard-placeholders"
CACHE_ROUTE = "cache"


def request_directives(ctx: RequestContext) -> frozenset[str]:
    """The request's ``x-switchboard-cache`` directives (``no-cache``, ``no-store``)."""
    value = ctx.headers.get(CACHE_HEADER, "")
    return frozenset(d.strip().lower() for d in value.split(",") if d.strip())


def reuse_refusal(ctx: RequestContext) -> str | None:
    """Why no stored or approved answer may serve this request, whatever the layer."""
    if ctx.handoff is not None:
        return "handoff"
    reason = uncacheable_reason(ctx.payload)
    if reason is not None:
        return f"uncacheable: {reason}"
    response_format = ctx.payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        # The bot parses JSON (or a schema) out of the answer: prose stored for a chat, or a
        # person's approved text, would break it.
        return "structured output"
    return None


def conversation(ctx: RequestContext) -> Mapping[str, Any]:
    """The payload the layers read: masked for a tenant that masks (they store and key on it)."""
    return ctx.masking.payload if ctx.masking is not None else ctx.payload


def earlier_turns(payload: Mapping[str, Any]) -> list[str]:
    """``role: text`` of every message before the last user message, system prompts apart."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return []
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
        default=-1,
    )
    turns: list[str] = []
    for message in messages[: max(last, 0)]:
        if not isinstance(message, dict) or message.get("role") in ("system", "developer"):
            continue
        turns.append(f"{message.get('role')}: {_text(message.get('content'))}")
    return turns


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def serve_text(ctx: RequestContext, text: str, model: str) -> None:
    """Answer ``ctx`` with ``text`` as a chat completion (or its SSE replay), counted like a
    model's answer (estimated tokens) and priced 0 by ``settle`` (route ``cache``)."""
    assert ctx.request is not None
    usage = Usage(
        prompt_tokens=ctx.prompt_tokens,
        completion_tokens=ctx.runtime.tokens.count_text(text, model),
        estimated=True,
    )
    ctx.served_by = CACHE_ROUTE
    ctx.model = model
    ctx.usage = usage
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


class AnswersStage:
    name = "answers"

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.request is not None and ctx.tenant is not None
        runtime = ctx.runtime
        cfg = runtime.tenant(ctx.tenant).answers
        if cfg is None or not runtime.config.answers.enabled:
            return
        approved_answers = runtime.answers
        loaded = approved_answers.tenant(ctx.tenant) if approved_answers is not None else None
        if loaded is None:
            return
        headers = ctx.response_headers
        refused = reuse_refusal(ctx)
        payload = conversation(ctx)
        if refused is None and not cfg.multi_turn and earlier_turns(payload):
            refused = "multi-turn"
        if refused is None and "no-cache" in request_directives(ctx):
            refused = "no-cache"
        if refused is not None:
            headers[ANSWERS_HEADER] = header_safe(f"bypass: {refused}")
            return
        text = last_user_text(payload)
        if not text.strip():
            headers[ANSWERS_HEADER] = "bypass: no text"
            return
        prediction = loaded.model.predict(text)
        approved = loaded.answers.intents.get(prediction.intent) if prediction.intent else None
        if approved is None:
            why = prediction.refused or ("not in the file" if prediction.intent else "abstained")
            headers[ANSWERS_HEADER] = header_safe(f"abstained: {why}")
            return
        # Here, not at module level (see the TYPE_CHECKING import): loaded already with the
        # tenant's model, so this is a sys.modules look-up.
        from gateway.answers.matcher import Match

        match = Match(
            tenant=ctx.tenant,
            intent=approved.intent,
            answer=approved.answer,
            confidence=prediction.confidence,
            placeholders=approved.placeholders,
        )
        self._answer(ctx, match, cfg.values)

    async def exit(self, ctx: RequestContext) -> None:
        return None

    @staticmethod
    def _answer(ctx: RequestContext, match: Match, values: Mapping[str, str]) -> None:
        assert ctx.request is not None
        model = ctx.request.model
        serve_text(ctx, match.render(values), model)
        ctx.cache_layer = "answers"
        ctx.intent = match.intent
        # The customer's masked values never reach an approved answer: nothing to restore.
        headers = ctx.response_headers
        headers.update(
            {
                "x-switchboard-route": CACHE_ROUTE,
                "x-switchboard-model": model,
                "x-switchboard-reason": header_safe(
                    f"approved answer: {match.intent} ({match.confidence:.3f})"
                ),
                CACHE_HEADER: "hit",
                CACHE_LAYER_HEADER: "answers",
                INTENT_HEADER: header_safe(match.intent),
            }
        )
        headers.pop(ANSWERS_HEADER, None)
        headers.pop(CACHE_REASON_HEADER, None)  # the exact cache's miss or bypass reason
        left = [name for name in match.placeholders if name not in values]
        if left:
            headers[PLACEHOLDERS_HEADER] = ",".join(left)
