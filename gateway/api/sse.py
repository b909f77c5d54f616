"""Server-sent events in OpenAI's framing."""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + _encode(data) + b"\n\n"


def comment(text: str) -> bytes:
    """An SSE comment line: clients ignore it; humans and our tests can read it."""
    return b": " + text.replace("\n", " ").encode("utf-8") + b"\n\n"
