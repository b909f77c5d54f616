"""What the admin endpoints show of a tenant's semantic cache: its live entries, newest first,
a page at a time (``GET /admin/cache/{tenant}/semantic``).

An entry is shown with what it holds and nothing more: its id, times, the request whose answer
it is, and the answer (masked for a tenant that masks: the cache never holds raw values). The
question's text is not stored, so it cannot be shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.cache.semantic.cache import SemanticCache
from gateway.semantic_config import MAX_ADMIN_PAGE as MAX_PAGE

__all__ = ["EntryPage", "list_entries"]


class _Answer(msgspec.Struct):
    """The parts of a stored answer (a ``gateway.cache.stage.CacheEntry``) a listing shows."""

    model: str = ""
    body: dict[str, Any] = {}


_decode = msgspec.json.Decoder(_Answer).decode


@dataclass(frozen=True, slots=True)
class EntryPage:
    tenant: str
    total: int
    offset: int
    limit: int
    entries: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "list",
            "tenant": self.tenant,
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "has_more": self.offset + len(self.entries) < self.total,
            "data": self.entries,
        }


def _text(raw: bytes) -> tuple[str | None, str | None]:
    try:
        answer = _decode(raw)
    except msgspec.DecodeError:
        return None, None
    choices = answer.body.get("choices")
    message = choices[0].get("message") if isinstance(choices, list) and choices else None
    content = message.get("content") if isinstance(message, dict) else None
    return answer.model or None, content if isinstance(content, str) else None


def list_entries(
    cache: SemanticCache, tenant: str, *, offset: int = 0, limit: int = 50
) -> EntryPage:
    """One page of the tenant's live entries, newest first (reads the store: blocking)."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"offset must be >= 0 and limit between 1 and {MAX_PAGE}")
    now = time.time()
    live = sorted(
        (e for e in cache.backend.entries(tenant) if not e.expired(now)),
        key=lambda e: e.stored_at,
        reverse=True,
    )
    page = []
    for entry in live[offset : offset + limit]:
        model, answer = _text(entry.answer)
        page.append(
            {
                "id": entry.id,
                "object": "semantic_cache.entry",
                "stored_at": round(entry.stored_at, 3),
                "expires_at": round(entry.expires_at, 3),
                "request_id": entry.request_id,
                "model": model,
                "answer": answer,
            }
        )
    return EntryPage(tenant, len(live), offset, limit, page)
