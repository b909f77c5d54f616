"""The cascade: the small tier answers first; an answer that looks unsure is discarded and the
large tier asked instead. Per tenant with ``safety.cascade.enabled`` (docs/safety.md).

Run by the tier stage when the route is the tenant's ``small_tier``:

- the small tier is called as usual (masked if it is not exempt); an OpenAI-compatible small
  tier is asked for ``logprobs`` (the client gets them only if it asked);
- its answer is judged (:func:`gateway.safety.confidence.judge`: token log-probabilities,
  hedging and refusal phrases, truncation, loops, an answer in another language than the
  customer's question); at or above the threshold it is ``kept``;
- below it the answer is ``escalated``: the large tier is called with the same request (always
  masked when the tenant masks: the large tier never gets raw values) and its answer is sent.
  The small call's cost is added to the request's cost and the small attempt is kept in the
  ledger's ``attempts``;
- streams (``stream: buffer``): the small tier's stream is read ahead up to
  ``stream_buffer_tokens`` before the client gets a byte; a whole answer within the bound is
  judged like a complete one; a longer one is sent as it is (``unjudged``): past the bound it is
  committed. ``stream: off`` leaves streams to the routed tier alone.

A small answer that fails to arrive is the tier stage's business (fallbacks), not a verdict.
If the large tier fails on escalation, the small answer is sent after all (better an unsure
answer than an error), with the failure in ``attempts`` and the reasons. With a budget, the
cascade escalates only when the reservation covered the large tier (it is one of the route's
fallbacks), so escalating cannot spend what was never reserved beyond the small call.

Headers: ``x-switchboard-cascade: kept|escalated|unjudged`` and ``x-switchboard-confidence``
(the score, when judged); the verdict's reasons join the routing reasons.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from gateway.errors import RateLimited, UpstreamError
from gateway.money import format_usd
from gateway.pipeline.context import RequestContext
from gateway.pipeline.headers import header_safe
from gateway.pipeline.masking import MASKED_HEADER
from gateway.safety.confidence import CascadeConfig, Confidence, judge
from gateway.tiers.base import CompletionStream, Json, TokenLogprob
from gateway.usage import Usage

log = logging.getLogger("gateway.pipeline")

CASCADE_HEADER = "x-switchboard-cascade"
# In the ledger's ``attempts``, the entry of a small answer the cascade discarded (not a failure).
DISCARDED = ": discarded by the cascade,"
CONFIDENCE_HEADER = "x-switchboard-confidence"

Outcome = Literal["kept", "escalated", "unjudged"]
OUTCOMES: tuple[str, ...] = ("kept", "escalated", "unjudged")

# The tier stage's call of one tier: sets ctx.completion or ctx.stream (extra payload fields).
CallTier = Callable[[RequestContext, str, Mapping[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class CascadeResult:
    """What the cascade did with one request (``ctx.cascade``), for settle and the ledger."""

    outcome: Outcome
    score: float | None = None
    # The small call's cost when its answer was discarded: part of the request's cost, since
    # the small tier was paid for an answer nobody got.
    discarded_micros: int = 0


def cascade_for(ctx: RequestContext, route: str) -> CascadeConfig | None:
    """The tenant's cascade when this call to ``route`` should run through it, else None."""
    if ctx.tenant is None or ctx.request is None or ctx.decision is None:
        return None
    cfg = ctx.runtime.tenant(ctx.tenant).safety.cascade
    if not cfg.enabled or route != cfg.small_tier or route != ctx.decision.route:
        return None
    if ctx.decision.pinned:
        return None  # the bot named the small tier itself (a pinned alias): its choice stands
    if cfg.large_tier not in ctx.runtime.tiers:
        return None
    if ctx.request.wants_stream and cfg.stream == "off":
        return None
    return cfg


async def answer(ctx: RequestContext, cfg: CascadeConfig, call: CallTier) -> str:
    """Answer through the cascade; returns the tier that answered.

    Raises the small tier's error when it fails before answering (the tier stage falls back).
    """
    extra = _logprob_fields(ctx, cfg)
    await call(ctx, cfg.small_tier, extra)
    if ctx.request is not None and ctx.request.wants_stream:
        return await _stream(ctx, cfg, call, bool(extra))
    return await _complete(ctx, cfg, call, bool(extra))


def _logprob_fields(ctx: RequestContext, cfg: CascadeConfig) -> dict[str, Any]:
    """``logprobs: true`` for an OpenAI-compatible small tier that the client did not ask."""
    if not cfg.request_logprobs or ctx.payload.get("logprobs") is True:
        return {}
    config = ctx.runtime.config
    tier = config.tiers.configured()[cfg.small_tier]
    if config.upstreams[tier.upstream].kind == "llama_cpp":
        return {}  # it always computes them
    return {"logprobs": True}


async def _complete(
    ctx: RequestContext, cfg: CascadeConfig, call: CallTier, strip_logprobs: bool
) -> str:
    small = ctx.completion
    assert small is not None
    choices = small.body.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    if strip_logprobs:
        for choice in choices:
            if isinstance(choice, dict):
                choice["logprobs"] = None
    message = first.get("message") if isinstance(first.get("message"), dict) else {}
    if message and message.get("tool_calls"):
        _unjudged(ctx, "cascade: a tool call, sent unjudged")
        return cfg.small_tier
    verdict = judge(
        small.text, small.logprobs, first.get("finish_reason"), cfg, question=_question(ctx)
    )
    if not _escalates(ctx, cfg, verdict):
        return cfg.small_tier
    usage = small.usage or _counted(ctx, small.text, small.model)
    kept_model = small.model
    if await _escalate(ctx, cfg, call, verdict, usage, small.model):
        return cfg.large_tier
    ctx.completion = small  # the large tier failed: the small answer after all
    ctx.usage = small.usage
    _restore_small(ctx, cfg, kept_model)
    return cfg.small_tier


async def _stream(
    ctx: RequestContext, cfg: CascadeConfig, call: CallTier, strip_logprobs: bool
) -> str:
    small = ctx.stream
    assert small is not None
    buffered = await _read_ahead(ctx, small, cfg)
    replay = _Replay(small, buffered, strip_logprobs=strip_logprobs)
    ctx.stream = replay
    if not buffered.complete:
        _unjudged(
            ctx,
            f"cascade: longer than the {cfg.stream_buffer_tokens}-token buffer, sent unjudged",
        )
        return cfg.small_tier
    if buffered.tool_call:
        _unjudged(ctx, "cascade: a tool call, sent unjudged")
        return cfg.small_tier
    text = "".join(buffered.text)
    verdict = judge(text, small.logprobs, buffered.finish_reason, cfg, question=_question(ctx))
    if not _escalates(ctx, cfg, verdict):
        return cfg.small_tier
    usage = small.usage or _counted(ctx, text, small.model)
    small_model = small.model
    if await _escalate(ctx, cfg, call, verdict, usage, small_model):
        await small.aclose()  # read to its end already; this frees the connection
        return cfg.large_tier
    ctx.stream = replay  # the large tier failed: the small answer after all
    _restore_small(ctx, cfg, small_model)
    return cfg.small_tier


def _escalates(ctx: RequestContext, cfg: CascadeConfig, verdict: Confidence) -> bool:
    """True when the verdict sends the request to the large tier; otherwise the answer is
    kept, and noted as such (a sure answer, or an unsure one the budget keeps)."""
    assert ctx.tenant is not None and ctx.decision is not None
    why = "; ".join(verdict.reasons)
    if not verdict.escalate(cfg.threshold):
        _note(ctx, CascadeResult("kept", verdict.score), f"cascade: kept ({verdict.score:.2f})")
        return False
    budgeted = ctx.runtime.tenant(ctx.tenant).budget is not None
    if budgeted and cfg.large_tier not in ctx.decision.fallbacks:
        _note(
            ctx,
            CascadeResult("kept", verdict.score),
            f"cascade: kept, though unsure ({verdict.score:.2f}: {why}); the budget "
            f"reservation does not cover the {cfg.large_tier} tier",
        )
        return False
    return True


async def _escalate(
    ctx: RequestContext,
    cfg: CascadeConfig,
    call: CallTier,
    verdict: Confidence,
    small_usage: Usage,
    small_model: str,
) -> bool:
    """Call the large tier for an unsure answer; False when it failed (the small one stays)."""
    runtime = ctx.runtime
    small_cost = runtime.prices.cost_micros(small_model, small_usage)
    why = "; ".join(verdict.reasons)
    ctx.attempts.append(
        f"{cfg.small_tier}{DISCARDED} confidence {verdict.score:.2f} ({why}); "
        f"{small_usage.prompt_tokens}+{small_usage.completion_tokens} tokens, "
        f"${format_usd(small_cost)}"
    )
    try:
        await call(ctx, cfg.large_tier, {})
    except (UpstreamError, RateLimited) as exc:
        runtime.health.record_failure(cfg.large_tier)
        ctx.attempts.append(f"{cfg.large_tier}: {exc.status} {exc.code}: {exc.message}")
        log.warning(
            "request %s: the cascade's %s tier failed (%s); sending the small answer",
            ctx.request_id,
            cfg.large_tier,
            exc.code,
        )
        _note(
            ctx,
            CascadeResult("kept", verdict.score),
            f"cascade: unsure ({verdict.score:.2f}: {why}) but the {cfg.large_tier} tier "
            f"failed ({exc.code}); small answer kept",
        )
        return False
    runtime.health.record_success(cfg.large_tier)
    _note(
        ctx,
        CascadeResult("escalated", verdict.score, discarded_micros=small_cost),
        f"cascade: escalated ({verdict.score:.2f} < {cfg.threshold:.2f}: {why})",
    )
    return True


def _restore_small(ctx: RequestContext, cfg: CascadeConfig, model: str) -> None:
    """Undo what the failed large call set up: the small answer is what the client gets."""
    ctx.model = model
    ctx.response_headers["x-switchboard-model"] = model
    masking = ctx.masking
    if masking is not None:
        masking.answer_masked = masking.masks(cfg.small_tier)
        if not masking.answer_masked:
            ctx.response_headers.pop(MASKED_HEADER, None)


def _unjudged(ctx: RequestContext, reason: str) -> None:
    _note(ctx, CascadeResult("unjudged"), reason)


def _note(ctx: RequestContext, result: CascadeResult, reason: str) -> None:
    """The outcome on the context, its headers, and its reason among the routing reasons."""
    assert ctx.decision is not None
    ctx.cascade = result
    ctx.response_headers[CASCADE_HEADER] = result.outcome
    if result.score is not None:
        ctx.response_headers[CONFIDENCE_HEADER] = f"{result.score:.3f}"
    ctx.decision = replace(ctx.decision, reasons=(*ctx.decision.reasons, reason))
    ctx.response_headers["x-switchboard-reason"] = header_safe("; ".join(ctx.decision.reasons))


def _question(ctx: RequestContext) -> str | None:
    """The customer's last turn, for the judge's language check (read here, never kept)."""
    return ctx.request.last_user_text() if ctx.request is not None else None


def _counted(ctx: RequestContext, text: str, model: str) -> Usage:
    """The small call's usage when its upstream reported none."""
    return Usage(
        prompt_tokens=ctx.prompt_tokens,
        completion_tokens=ctx.runtime.tokens.count_text(text, model),
        estimated=True,
    )


# --- streams -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _ReadAhead:
    chunks: list[Json]
    text: list[str]
    rest: AsyncIterator[Json]
    complete: bool = False  # the stream ended within the bound
    finish_reason: str | None = None
    tool_call: bool = False


async def _read_ahead(
    ctx: RequestContext, stream: CompletionStream, cfg: CascadeConfig
) -> _ReadAhead:
    """Read the small stream until it ends or its text passes the buffer bound.

    Tokens are counted per delta with the gateway's tokenizer (upstreams send about one token
    per chunk; the sum is close to the answer's count and never needs a second pass).
    A failure here raises: nothing was sent yet, so the tier stage may still fall back.
    """
    rest = stream.__aiter__()
    ahead = _ReadAhead(chunks=[], text=[], rest=rest)
    tokens = 0
    count = ctx.runtime.tokens.count_text
    while True:
        try:
            chunk = await rest.__anext__()
        except StopAsyncIteration:
            ahead.complete = True
            return ahead
        except BaseException:
            await stream.aclose()
            raise
        ahead.chunks.append(chunk)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    ahead.text.append(content)
                    tokens += count(content, stream.model)
                if delta.get("tool_calls"):
                    ahead.tool_call = True
            if isinstance(choice.get("finish_reason"), str):
                ahead.finish_reason = choice["finish_reason"]
        if tokens > cfg.stream_buffer_tokens:
            return ahead  # committed: sent as it is


class _Replay:
    """The small stream as the client gets it: the chunks read ahead, then the rest (if any),
    without the log-probabilities the gateway asked for on its own account."""

    def __init__(
        self, stream: CompletionStream, ahead: _ReadAhead, *, strip_logprobs: bool
    ) -> None:
        self._stream = stream
        self._ahead = ahead
        self._strip = strip_logprobs

    @property
    def model(self) -> str:
        return self._stream.model

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def logprobs(self) -> list[TokenLogprob]:
        return self._stream.logprobs

    def __aiter__(self) -> AsyncIterator[Json]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Json]:
        for chunk in self._ahead.chunks:
            yield self._clean(chunk)
        if self._ahead.complete:
            return
        rest = self._ahead.rest
        while True:
            try:
                chunk = await rest.__anext__()
            except StopAsyncIteration:
                return
            yield self._clean(chunk)

    def _clean(self, chunk: Json) -> Json:
        if self._strip:
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict):
                    choice["logprobs"] = None
        return chunk

    async def aclose(self) -> None:
        await self._stream.aclose()
