"""POST /v1/completions (legacy text completions), translated onto the chat pipeline.

The prompt becomes one user message, so legacy requests are routed, cached, billed and recorded
like chat; the answer is translated back into ``text_completion`` objects.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.response import Stream

from gateway.api.handlers import answer_chat, body_reader, request_headers, switchboard_of
from gateway.api.openapi import COMPLETIONS_BODY, described
from gateway.errors import InvalidRequest
from gateway.request_json import decode_json_body

_encode = msgspec.json.Encoder().encode

# Legacy-only parameters the chat endpoint has no equivalent for.
_DROPPED = ("prompt", "suffix", "echo", "best_of", "logprobs")


def completion_to_chat(body: bytes) -> bytes:
    """A legacy completions body as a chat completions body."""
    raw = decode_json_body(body) if body else None
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object with `model` and `prompt`.")
    prompt = raw.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest(
            "`prompt` must be a string (or a list of one string); token arrays and batches of "
            "prompts are not supported by this gateway.",
            param="prompt",
        )
    if raw.get("echo"):
        raise InvalidRequest("`echo` is not supported by this gateway.", param="echo")
    chat = {k: v for k, v in raw.items() if k not in _DROPPED}
    chat["messages"] = [{"role": "user", "content": prompt}]
    return _encode(chat)


def _text_choice(choice: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "text": text,
        "index": choice.get("index", 0),
        "logprobs": None,
        "finish_reason": choice.get("finish_reason"),
    }


def chat_body_to_text(body: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        content = message.get("content")
        choices.append(_text_choice(choice, content if isinstance(content, str) else ""))
    return {
        "id": str(body.get("id", "")).replace("chatcmpl-", "cmpl-", 1),
        "object": "text_completion",
        "created": body.get("created"),
        "model": body.get("model"),
        "choices": choices,
        "usage": body.get("usage"),
    }


def chat_chunk_to_text(chunk: dict[str, Any]) -> dict[str, Any]:
    if "error" in chunk and "choices" not in chunk:
        return chunk  # the mid-stream error event keeps its shape
    choices = []
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        choices.append(_text_choice(choice, content if isinstance(content, str) else ""))
    text_chunk = {
        "id": str(chunk.get("id", "")).replace("chatcmpl-", "cmpl-", 1),
        "object": "text_completion",
        "created": chunk.get("created"),
        "model": chunk.get("model"),
        "choices": choices,
    }
    if "usage" in chunk:
        text_chunk["usage"] = chunk["usage"]
    return text_chunk


@post(
    "/v1/completions",
    status_code=200,
    operation_class=described(COMPLETIONS_BODY, description="A legacy OpenAI completions request"),
)
async def completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    board = switchboard_of(request)
    read_raw = body_reader(request)

    async def read_as_chat() -> bytes:
        return completion_to_chat(await read_raw())

    return await answer_chat(
        board,
        request_headers(request),
        read_as_chat,
        shape_body=chat_body_to_text,
        shape_chunk=chat_chunk_to_text,
    )
