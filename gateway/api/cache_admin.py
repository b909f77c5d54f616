"""HTTP for the answer caches' admin endpoints (admin key only; docs/caching.md):

- ``GET /admin/cache/{tenant}/semantic?offset=&limit=``: the tenant's semantic-cache entries,
  newest first, a page at a time;
- ``DELETE /admin/cache/{tenant}/semantic/{entry_id}``: invalidate one entry;
- ``POST /admin/cache/{tenant}/purge``: remove all the tenant's cached answers (semantic
  entries, and every exact-cache entry, which stop being found at once);
- ``POST /admin/answers/{tenant}/promote``: a person approved a wording (``example``) for an
  intent, or a new intent with its ``answer``: it goes into the tenant's answers file, checked;
  served after ``gateway answers train`` (the reload that follows purges the tenant's caches).

This module only translates; the logic is ``gateway.cache.semantic.admin``,
``gateway.answers.promote`` and the ``Switchboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Response, delete, get, post
from litestar.params import FromPath
from msgspec import Meta

from gateway.answers.file import AnswersFileError
from gateway.answers.promote import promote_answer, promote_example
from gateway.api.handlers import AnyRequest, body_reader, request_headers, switchboard_of
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest
from gateway.pipeline.stages import presented_key
from gateway.semantic_config import MAX_ADMIN_PAGE as MAX_PAGE
from gateway.service import Switchboard

__all__ = ["CACHE_ADMIN_ROUTES"]

_encode = msgspec.json.Encoder().encode


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


def _json(body: Any) -> Response[bytes]:
    return Response(content=_encode(body), status_code=200, media_type="application/json")


def _admin(request: AnyRequest, tenant: str) -> Switchboard:
    """The switchboard, if the admin key was sent and ``tenant`` exists."""
    board = switchboard_of(request)
    key = presented_key(request_headers(request))
    if key is None or not board.runtime.keys.is_admin(key):
        raise AuthenticationFailed(
            "Missing or incorrect admin key: these endpoints take a key from `admin.keys`."
        )
    tenants = board.runtime.config.tenants
    if tenant not in tenants:
        raise NotFound(
            f"unknown tenant {tenant!r}; configured tenants: {', '.join(sorted(tenants))}",
            param="tenant",
        )
    return board


def _int(request: AnyRequest, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer, got {text!r}", param=name) from None


@get("/admin/cache/{tenant:str}/semantic")
async def semantic_entries(request: AnyRequest, tenant: FromPath[str]) -> Response[bytes]:
    board = _admin(request, tenant)
    cache = board.semantic
    offset, limit = _int(request, "offset", 0), _int(request, "limit", 50)
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(
            f"offset must be >= 0 and limit between 1 and {MAX_PAGE} (got {offset}, {limit})",
            param="limit",
        )
    if cache is None:
        empty = {"object": "list", "tenant": tenant, "total": 0, "offset": offset}
        return _json({**empty, "limit": limit, "has_more": False, "data": []})
    # Imported here, not at module level: the semantic cache package imports numpy (~15 MiB of
    # resident memory) and no tenant may use it; with a cache open it is loaded already.
    from gateway.cache.semantic.admin import list_entries

    page = await anyio.to_thread.run_sync(
        lambda: list_entries(cache, tenant, offset=offset, limit=limit)
    )
    return _json(page.as_json())


@delete("/admin/cache/{tenant:str}/semantic/{entry_id:str}", status_code=200)
async def invalidate_entry(
    request: AnyRequest, tenant: FromPath[str], entry_id: FromPath[str]
) -> Response[bytes]:
    board = _admin(request, tenant)
    cache = board.semantic
    removed = cache is not None and await anyio.to_thread.run_sync(
        cache.invalidate, tenant, entry_id
    )
    if not removed:
        raise NotFound(
            f"no semantic-cache entry {entry_id!r} for tenant {tenant!r}; "
            f"GET /admin/cache/{tenant}/semantic lists them",
            param="entry_id",
        )
    return _json({"object": "semantic_cache.entry", "id": entry_id, "deleted": True})


@post("/admin/cache/{tenant:str}/purge", status_code=200)
async def purge(request: AnyRequest, tenant: FromPath[str]) -> Response[bytes]:
    board = _admin(request, tenant)
    semantic = await board.purge_tenant(tenant)
    exact = await board.purge_exact(tenant)
    return _json(
        {"object": "cache.purge", "tenant": tenant, "semantic_entries": semantic, "exact": exact}
    )


class PromoteBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    intent: Annotated[str, Meta(min_length=1, max_length=100)]
    example: Annotated[str, Meta(min_length=1, max_length=2000)]
    # Given: a new intent with this approved answer. Omitted: the example joins ``intent``.
    answer: Annotated[str, Meta(min_length=1, max_length=4000)] | None = None


@post("/admin/answers/{tenant:str}/promote", status_code=200)
async def promote(request: AnyRequest, tenant: FromPath[str]) -> Response[bytes]:
    board = _admin(request, tenant)
    cfg = board.runtime.tenant(tenant).answers
    if cfg is None:
        raise InvalidRequest(
            f"tenant {tenant!r} has no approved answers; give it `answers: {{file: ..., "
            "model: ...}}` in the config (docs/caching.md)",
            param="tenant",
        )
    try:
        body = msgspec.json.decode(await body_reader(request)(), type=PromoteBody)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidRequest(
            f'Invalid promotion: {exc}. Send {{"intent": ..., "example": the customer\'s '
            'wording, "answer": the approved text (only for a new intent)}.'
        ) from exc
    path = Path(cfg.file).expanduser()

    def write() -> bool:
        if body.answer is None:
            return promote_example(path, body.intent, body.example)
        promote_answer(path, body.intent, body.answer, body.example)
        return True

    try:
        added = await anyio.to_thread.run_sync(write)
    except AnswersFileError as exc:
        raise InvalidRequest(str(exc), param="intent") from exc
    return _json(
        {
            "object": "answers.promotion",
            "tenant": tenant,
            "intent": body.intent,
            "added": added,
            # Served once the matcher learns it; the reload after training purges the caches.
            "next": f"gateway answers train --data {cfg.file} --out {cfg.model}",
        }
    )


CACHE_ADMIN_ROUTES = [semantic_entries, invalidate_entry, purge, promote]
