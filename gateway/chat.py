"""What a chat request is, as the gateway reads it: the OpenAI fields it looks at, validated.

The request is forwarded as the raw JSON object the client sent (unknown fields included: clients
add new ones every month), so this struct names only what routing, accounting and validation need.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.errors import InvalidRequest
from gateway.request_json import decode_json_body

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# The content part types of OpenAI's chat API (user: text, image_url, input_audio, file;
# assistant: text, refusal) and input_image, which some OpenAI-compatible servers take. Another
# type is refused here, naming the part, rather than by the provider after routing and a budget
# reservation (or, worse, silently dropped by a server that skips what it does not know).
CONTENT_PART_TYPES = frozenset(
    {"text", "image_url", "input_audio", "file", "refusal", "input_image"}
)
# No model writes a million tokens in one answer; the bound keeps a budget reservation (max
# output x price) a sane integer instead of 10^23 micro-dollars.
MAX_OUTPUT_TOKENS = 1_000_000


class Message(msgspec.Struct, frozen=True):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct, frozen=True):
    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    tools: list[dict[str, Any]] | None = None
    user: str | None = None

    @property
    def wants_stream(self) -> bool:
        return bool(self.stream)

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return content_text(message.content)
        return ""

    def has_images(self) -> bool:
        return any(
            isinstance(m.content, list)
            and any(p.get("type") in ("image_url", "input_image") for p in m.content)
            for m in self.messages
        )


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message's content, whether a string or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if isinstance(p.get("text"), str))


def parse_chat_request(body: bytes) -> tuple[ChatRequest, dict[str, Any]]:
    """Decode and validate a request body: the typed view and the raw object to forward."""
    if not body:
        raise InvalidRequest(
            "The request body is empty; send a JSON object with `model` and `messages`."
        )
    raw = decode_json_body(body)
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object with `model` and `messages`.")
    try:
        request = msgspec.convert(raw, ChatRequest)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = None
        if " - at `$." in message:
            message, _, where = message.rpartition(" - at `$.")
            param = where.rstrip("`")
        elif message.startswith("Object missing required field"):
            param = message.split("`")[1]
        text = f"Invalid request: {message}" + (f" (at `{param}`)" if param else "")
        if param == "messages" and "length" in message:
            text = "Invalid request: `messages` must contain at least one message."
        raise InvalidRequest(text, param=param) from exc
    _check_content_parts(request.messages)
    return request, raw


def _check_content_parts(messages: list[Message]) -> None:
    known = ", ".join(sorted(CONTENT_PART_TYPES))
    for i, message in enumerate(messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            kind = part.get("type")
            if isinstance(kind, str) and kind in CONTENT_PART_TYPES:
                continue
            where = f"messages[{i}].content[{j}].type"
            if kind is None:
                what = "has no `type`"
            elif isinstance(kind, str):
                what = f"has the unknown type {kind[:64]!r}"
            else:
                what = "has a `type` that is not a string"
            raise InvalidRequest(
                f"Invalid request: content part `messages[{i}].content[{j}]` {what}; "
                f"known types: {known}.",
                param=where,
            )
