"""The state of one request as it passes through the pipeline's stages."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.chat import ChatRequest
from gateway.errors import GatewayError
from gateway.routing.policy import BudgetSignal, RoutingDecision
from gateway.tiers.base import Completion, CompletionStream
from gateway.usage import Usage

if TYPE_CHECKING:
    from gateway.pipeline.cascade import CascadeResult
    from gateway.pipeline.masking import RequestMasking
    from gateway.pipeline.semantic import SemanticQuery
    from gateway.runtime import Runtime

# Not an HTTP status a client ever sees: the ledger's mark for "client went away mid-answer".
CLIENT_CLOSED = 499


@dataclass(slots=True)
class RequestContext:
    runtime: Runtime
    request_id: str
    headers: Mapping[str, str]  # lower-case names
    # Reads the request body; the HTTP layer enforces the size limit (PayloadTooLarge) there.
    read_body: Callable[[], Awaitable[bytes]]
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.perf_counter)

    # How many stages' ``enter`` ran (their ``exit`` runs at the end).
    entered: int = 0
    tenant: str | None = None
    request: ChatRequest | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    decision: RoutingDecision | None = None
    # The tenant's budget state for the router (set by the limits stage, before routing).
    budget_signal: BudgetSignal | None = None
    # Set by the budget stages when only a cached answer may be served: the error a cache miss
    # gets (429 insufficient_quota).
    cache_only: GatewayError | None = None
    # The budget reservation this request holds (its id), settled or released on exit.
    reservation: str | None = None
    # The handoff signal of the customer's last turn (the ``x-switchboard-handoff`` value, e.g.
    # "legal_threat", "intent:refund_dispute"), set by the handoff stage; None: no signal.
    handoff: str | None = None
    # A reason to send this request to the large tier (a handoff), for the router.
    escalate: str | None = None
    # The request masked for hosted tiers, when the tenant masks (gateway.pipeline.masking).
    masking: RequestMasking | None = None

    # The answer: exactly one of these is set once the tier stage has run.
    completion: Completion | None = None
    stream: CompletionStream | None = None
    # What a stream has delivered so far (counted when the upstream sends no usage).
    streamed_text: list[str] = field(default_factory=list)

    # The tier that answered: the decision's route, a fallback, or "cache".
    served_by: str | None = None
    # Tiers that failed before one answered, for the ledger ("small: 503 ..."), and a small
    # answer the cascade discarded.
    attempts: list[str] = field(default_factory=list)
    # What the small-first cascade did (gateway.pipeline.cascade); None: it did not run.
    cascade: CascadeResult | None = None
    model: str | None = None  # the upstream model that answered
    usage: Usage | None = None
    cost_micros: int = 0
    baseline_cost_micros: int = 0
    status: int = 200
    error: GatewayError | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    # The request's OpenTelemetry span (gateway.telemetry): kept here, not in a contextvar, because
    # a stream's accounting finishes in another task than the one that started it.
    span: Any = None
    # The first choice's finish_reason once a stream has sent it (set by the stream relay): the
    # cache stores only streams that finished with "stop".
    finish_reason: str | None = None
    # Set by the cache stage when this request's answer may be stored, and under which key.
    cache_key: str | None = None
    # Set once the request's ledger record is committed (before its budget is settled).
    recorded: bool = False
    # Which answer-reuse layer answered: "exact", "answers" (approved answers) or "semantic";
    # for the x-switchboard-cache-layer header, the ledger and the reports.
    cache_layer: str | None = None
    # The approved-answers intent that answered (x-switchboard-intent, the ledger).
    intent: str | None = None
    # Set by the semantic stage when this request's answer may be stored, and under what.
    semantic: SemanticQuery | None = None

    @property
    def answered(self) -> bool:
        return self.completion is not None or self.stream is not None

    @property
    def route(self) -> str:
        if self.served_by is not None:
            return self.served_by
        return self.decision.route if self.decision else "none"

    def fail(self, error: GatewayError) -> None:
        """Mark the request failed (first error wins: it is the cause)."""
        if self.error is None:
            self.error = error
            self.status = error.status

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
