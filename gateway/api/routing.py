"""HTTP for the router's own endpoints: ``POST /v1/route/explain`` and ``POST /v1/feedback``."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import msgspec
from litestar import Response, post
from msgspec import Meta

from gateway.api.handlers import (
    AnyRequest,
    body_reader,
    request_headers,
    switchboard_of,
)
from gateway.api.openapi import CHAT_BODY, described, inline_schema
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
)
from gateway.feedback import COMMENT_LIMIT, VERDICTS, FeedbackError, Verdict
from gateway.ledger import LedgerError
from gateway.pipeline.explain import explain
from gateway.pipeline.stages import presented_key
from gateway.request_json import decode_json_body

_encode = msgspec.json.Encoder().encode


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encode(body), status_code=status, media_type="application/json")


@post(
    "/v1/route/explain",
    status_code=200,
    operation_class=described(
        CHAT_BODY, description="The chat request to explain", query=("tenant",)
    ),
)
async def route_explain(request: AnyRequest) -> Response[bytes]:
    """The routing decision for a chat body, no model called. Tenant key; or the admin key
    with ``?tenant=NAME``."""
    board = switchboard_of(request)
    runtime = board.runtime
    key = presented_key(request_headers(request))
    tenant = runtime.keys.tenant_for(key) if key else None
    if tenant is None:
        if key is None or not runtime.keys.is_admin(key):
            raise AuthenticationFailed(
                "Missing or incorrect API key: send a tenant key, or the admin key with "
                "?tenant=NAME."
            )
        tenant = request.query_params.get("tenant") or None
        if tenant is None:
            raise InvalidRequest(
                "With the admin key, name the tenant to explain for: ?tenant=NAME "
                f"(tenants: {', '.join(runtime.config.tenants)}).",
                param="tenant",
            )
        if tenant not in runtime.config.tenants:
            raise InvalidRequest(
                f"unknown tenant {tenant!r}; tenants: {', '.join(runtime.config.tenants)}",
                param="tenant",
            )
    body = await body_reader(request)()
    return _json(await explain(runtime, tenant, body, budget_store=board.budget_store))


class FeedbackBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    request_id: Annotated[str, Meta(min_length=1, max_length=128)]
    verdict: Verdict
    comment: Annotated[str, Meta(max_length=COMMENT_LIMIT)] | None = None


@post(
    "/v1/feedback",
    status_code=200,
    operation_class=described(
        inline_schema(FeedbackBody), description="A verdict on one of the tenant's answers"
    ),
)
async def feedback(request: AnyRequest) -> Response[bytes]:
    """A verdict (good, bad, handoff) on one of the tenant's answers, by its request id."""
    board = switchboard_of(request)
    key = presented_key(request_headers(request))
    tenant = board.runtime.keys.tenant_for(key) if key else None
    if tenant is None:
        raise AuthenticationFailed(
            "Missing or incorrect API key: send `Authorization: Bearer <tenant key>`."
        )
    raw = await body_reader(request)()
    try:
        body = msgspec.convert(decode_json_body(raw), FeedbackBody)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(
            f'Invalid feedback: {exc}. Send {{"request_id": "<x-switchboard-request-id of the '
            f'answer>", "verdict": one of {", ".join(VERDICTS)}, "comment": optional}}.'
        ) from exc
    store = board.feedback
    if store is None:
        raise InvalidRequest("Feedback is not available: this gateway runs without a ledger file.")
    ledger = board.runtime.ledger

    def save() -> bool:
        ledger.flush()  # the answer's own record may still be on its way to disk
        return store.record(tenant, body.request_id, body.verdict, body.comment)

    try:
        stored = await anyio.to_thread.run_sync(save)
    except (FeedbackError, LedgerError) as exc:
        raise GatewayError(f"Could not store the feedback: {exc}") from exc
    if not stored:
        # The same answer for another tenant's id and for no id at all: nothing leaks.
        raise NotFound(
            f"No request {body.request_id!r} for this tenant; use the x-switchboard-request-id "
            "header of one of its answers.",
            param="request_id",
        )
    answer: dict[str, Any] = {
        "object": "feedback",
        "request_id": body.request_id,
        "verdict": body.verdict,
    }
    semantic = board.semantic
    if semantic is not None:
        # Imported here, not at module level: the semantic cache package imports numpy (~15 MiB
        # of resident memory) and no tenant may use it; with a cache open it is loaded already.
        from gateway.cache.semantic.feedback import apply_verdict

        # A wrong answer leaves the semantic cache at once (the entry it was served from, or
        # the one its answer created); "good" and "handoff" change nothing there.
        answer["invalidated"] = await anyio.to_thread.run_sync(
            apply_verdict, semantic, tenant, body.request_id, body.verdict
        )
    return _json(answer)


ROUTING_ROUTES = [route_explain, feedback]
