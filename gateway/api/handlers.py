"""HTTP handlers: translate between the wire and the pipeline; they never decide anything."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Stream

from gateway.api import sse
from gateway.api.errors import REQUEST_ID, error_response, wire_headers
from gateway.api.openapi import CHAT_BODY, EMBEDDINGS_BODY, described
from gateway.embeddings import embed
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
)
from gateway.ledger import LedgerError, LedgerQuery
from gateway.money import format_usd
from gateway.pipeline.context import CLIENT_CLOSED, RequestContext
from gateway.pipeline.stages import presented_key
from gateway.pipeline.streaming import relay
from gateway.reports import build_report, parse_date_bound, render_csv, render_json
from gateway.routing.policy import allowed_models
from gateway.service import Switchboard

_encode = msgspec.json.Encoder().encode
# A fixed `created` for model objects: the spec wants an int; the config has no better date.
_MODELS_CREATED = int(time.time())

AnyRequest = Request[Any, Any, Any]


def switchboard_of(request: AnyRequest) -> Switchboard:
    board: Switchboard = request.app.state.switchboard
    return board


def request_headers(request: AnyRequest) -> dict[str, str]:
    # ASGI already gives lower-case names; decoding once here keeps the pipeline byte-free.
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}


def body_reader(request: AnyRequest) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        try:
            return await request.body()
        except HTTPException as exc:
            if exc.status_code == 413:
                limit = request.app.state.switchboard.runtime.config.server.body_limit_bytes
                raise PayloadTooLarge(
                    f"The request body is larger than this gateway's limit of {limit} bytes "
                    "(config: server.body_limit_bytes)."
                ) from exc
            raise

    return read


@post(
    "/v1/chat/completions",
    status_code=200,
    operation_class=described(CHAT_BODY, description="An OpenAI chat completion request"),
)
async def chat_completions(request: AnyRequest) -> Response[bytes] | Stream:
    board = switchboard_of(request)
    return await answer_chat(board, request_headers(request), body_reader(request))


Shape = Callable[[dict[str, Any]], dict[str, Any]]


def _same(data: dict[str, Any]) -> dict[str, Any]:
    return data


async def answer_chat(
    board: Switchboard,
    headers: dict[str, str],
    read_body: Callable[[], Awaitable[bytes]],
    *,
    shape_body: Shape = _same,
    shape_chunk: Shape = _same,
) -> Response[bytes] | Stream:
    """Run a chat request through the pipeline and put the answer on the wire.

    ``shape_body`` / ``shape_chunk`` translate the chat answer for endpoints that speak another
    wire format over the same pipeline (legacy completions).
    """
    ctx = board.new_context(headers, read_body)
    pipeline = board.pipeline
    try:
        await pipeline.start(ctx)
    except GatewayError as exc:
        await pipeline.finish(ctx)
        return error_response(exc, ctx.request_id, ctx.response_headers)

    if ctx.stream is None:
        assert ctx.completion is not None
        await pipeline.finish(ctx)
        return Response(
            content=_encode(shape_body(ctx.completion.body)),
            media_type="application/json",
            headers=wire_headers({**ctx.response_headers, REQUEST_ID: ctx.request_id}),
        )

    # Pull the first chunk before answering, so a stream that fails before its first byte still
    # gets a real HTTP status and a JSON error body instead of a 200 stream.
    events = relay(ctx)
    first: dict[str, Any] | None = None
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    if ctx.error is not None:
        await events.aclose()
        await pipeline.finish(ctx)
        return error_response(ctx.error, ctx.request_id, ctx.response_headers)
    return Stream(
        _sse_body(board, ctx, first, events, shape_chunk),
        media_type="text/event-stream",
        headers=wire_headers(
            {
                **ctx.response_headers,
                REQUEST_ID: ctx.request_id,
                "cache-control": "no-cache",
                "x-accel-buffering": "no",
            }
        ),
    )


async def _sse_body(
    board: Switchboard,
    ctx: RequestContext,
    first: dict[str, Any] | None,
    events: AsyncGenerator[dict[str, Any], None],
    shape_chunk: Shape,
) -> AsyncIterator[bytes]:
    finished = False
    try:
        if first is not None:
            yield sse.event(shape_chunk(first))
        async for chunk in events:
            yield sse.event(shape_chunk(chunk))
        finished = True
    finally:
        if not finished and ctx.error is None:
            ctx.status = CLIENT_CLOSED  # the client left: bill what was generated
        # Accounting must survive the cancellation that a client disconnect delivers.
        with anyio.CancelScope(shield=True):
            await events.aclose()
            await board.pipeline.finish(ctx)
    yield sse.comment(f"x-switchboard-cost-usd={format_usd(ctx.cost_micros)}")
    yield sse.DONE


@post(
    "/v1/embeddings",
    status_code=200,
    operation_class=described(EMBEDDINGS_BODY, description="An OpenAI embeddings request"),
)
async def embeddings(request: AnyRequest) -> Response[bytes]:
    board = switchboard_of(request)
    tenant = _tenant_or_401(request, board)
    request_id = uuid.uuid4().hex
    try:
        answer = await embed(
            board.runtime,
            tenant,
            await body_reader(request)(),
            request_id,
            budget_store=board.budget_store,
        )
    except GatewayError as exc:
        return error_response(exc, request_id)
    return Response(
        content=_encode(answer.body),
        media_type="application/json",
        headers={**answer.headers, REQUEST_ID: request_id},
    )


def _tenant_or_401(request: AnyRequest, board: Switchboard) -> str:
    key = presented_key(request_headers(request))
    tenant = board.runtime.keys.tenant_for(key) if key else None
    if tenant is None:
        raise AuthenticationFailed(
            "Missing or incorrect API key: send `Authorization: Bearer <tenant key>`."
        )
    return tenant


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": "switchboard"}


@get("/v1/models", operation_class=described())
async def list_models(request: AnyRequest) -> Response[bytes]:
    board = switchboard_of(request)
    tenant = _tenant_or_401(request, board)
    runtime = board.runtime
    names = allowed_models(runtime.config, runtime.tenant(tenant))
    body = {"object": "list", "data": [_model_object(n) for n in names]}
    return Response(content=_encode(body), media_type="application/json")


@get("/v1/models/{model_id:path}", operation_class=described())
async def retrieve_model(request: AnyRequest, model_id: FromPath[str]) -> Response[bytes]:
    board = switchboard_of(request)
    tenant = _tenant_or_401(request, board)
    runtime = board.runtime
    name = model_id.lstrip("/")
    if name not in allowed_models(runtime.config, runtime.tenant(tenant)):
        raise ModelNotFound(
            f"The model {name!r} does not exist or you do not have access to it.", param="model"
        )
    return Response(content=_encode(_model_object(name)), media_type="application/json")


@get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _ledger_writable(board: Switchboard) -> bool:
    try:
        board.runtime.ledger.flush(timeout=2.0)
    except LedgerError:
        return False
    return True


@get("/readyz")
async def readyz(request: AnyRequest) -> Response[bytes]:
    """Readiness: config loaded, ledger writer alive, start-up finished."""
    board = switchboard_of(request)
    checks = {
        "started": board.ready,
        "ledger": await anyio.to_thread.run_sync(_ledger_writable, board),
    }
    ok = all(checks.values())
    return Response(
        content=_encode({"status": "ok" if ok else "unavailable", "checks": checks}),
        status_code=200 if ok else 503,
        media_type="application/json",
    )


@get(
    "/admin/report",
    operation_class=described(query=("format", "group_by", "since", "tenant", "until")),
)
async def admin_report(request: AnyRequest) -> Response[bytes]:
    """Spend report for finance (admin key): ?tenant=&since=&until=&group_by=&format=json|csv."""
    board = switchboard_of(request)
    key = presented_key(request_headers(request))
    if key is None or not board.runtime.keys.is_admin(key):
        raise AuthenticationFailed("This endpoint needs the admin key (config: admin.keys).")
    params: Mapping[str, str] = request.query_params
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest(f"unknown format {fmt!r}; use json or csv", param="format")
    try:
        query = LedgerQuery(
            tenant=params.get("tenant") or None,
            since=parse_date_bound(params["since"]) if params.get("since") else None,
            until=parse_date_bound(params["until"], end=True) if params.get("until") else None,
        )
        group_by = tuple(
            g for g in (params.get("group_by") or "tenant,route,model").split(",") if g
        )
        ledger = board.runtime.ledger
        # Flushing and reading SQLite block: keep them off the event loop.
        await anyio.to_thread.run_sync(ledger.flush)
        report = await anyio.to_thread.run_sync(build_report, ledger, query, group_by)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if fmt == "csv":
        return Response(content=render_csv(report).encode(), media_type="text/csv")
    return Response(content=render_json(report).encode(), media_type="application/json")


ROUTES = [
    chat_completions,
    embeddings,
    list_models,
    retrieve_model,
    healthz,
    readyz,
    admin_report,
]
