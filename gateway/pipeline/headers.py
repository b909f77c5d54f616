"""Request and response header helpers shared by the stages."""

from __future__ import annotations

from collections.abc import Mapping

# Set on every answer of a tenant past a soft limit (or served unmetered while the budget store
# is down, or served from the cache only at a hard limit): what happened and why.
BUDGET_WARNING = "x-switchboard-budget-warning"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key from ``Authorization: Bearer`` or Azure's ``api-key`` header."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    key = headers.get("api-key")
    return key.strip() if key else None


def header_safe(text: str, limit: int = 512) -> str:
    """A header value: one line, ASCII (non-ASCII percent-encoded), bounded length."""
    text = text.replace("\r", " ").replace("\n", " ")
    if not text.isascii():
        text = "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode()) for c in text)
    return text[:limit]
