"""Relaying an upstream stream to the client the way OpenAI streams: what to pass, fix or hold back.

- Every chunk carries ``id``, ``object: chat.completion.chunk``, ``created`` and ``model``.
- The first delta carries ``role``.
- We always ask upstreams for the usage chunk (it is what we bill by); the client gets the
  usage-only chunk (``choices: []``) only if it asked with ``stream_options.include_usage``, since
  code reading ``chunk.choices[0]`` crashes on it otherwise.
- An upstream failure after the first chunk becomes one ``{"error": ...}`` event; so does anything
  unforeseen (a generic 500 with the request id, details to the log), so a stream is never torn.
- Every delta's text is kept in ``ctx.streamed_text`` so a stream without usage, or one the client
  abandoned, is still billed for what was generated.
- For a masked request, placeholders in deltas (content and tool-call arguments) are restored
  before they are sent; one split across chunks is held back until it is whole (at most one
  placeholder's length) and flushed at the choice's finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from gateway.errors import GatewayError, InternalError
from gateway.pipeline.context import RequestContext
from gateway.safety.masking import Restorer
from gateway.usage import Usage

log = logging.getLogger("gateway.pipeline")


def counted_usage(ctx: RequestContext) -> Usage:
    """Usage counted with tiktoken from what the answer contained (no upstream usage)."""
    if ctx.completion is not None:
        text = ctx.completion.text
    elif ctx.stream is not None:
        text = "".join(ctx.streamed_text)
    else:
        return Usage(estimated=True)  # no tier answered: nothing to bill
    completion_tokens = ctx.runtime.tokens.count_text(text, ctx.model) if text else 0
    return Usage(
        prompt_tokens=ctx.prompt_tokens, completion_tokens=completion_tokens, estimated=True
    )


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


async def relay(ctx: RequestContext) -> AsyncGenerator[dict[str, Any], None]:
    """The chunks to send for ``ctx.stream``; ends after an error event if the upstream fails."""
    stream = ctx.stream
    request = ctx.request
    assert stream is not None and request is not None
    wants_usage = request.wants_usage_chunk
    restoring = _Restoring.of(ctx)
    first = True
    chunk_id = f"chatcmpl-{ctx.request_id}"
    created = int(time.time())
    try:
        async for chunk in stream:
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                choices = chunk["choices"] = []
            if not choices and (not wants_usage or not chunk.get("usage")):
                continue  # a usage-only chunk the client did not ask for, or an empty one
            chunk["object"] = "chat.completion.chunk"
            chunk.setdefault("id", chunk_id)
            if not isinstance(chunk.get("created"), int):
                chunk["created"] = created
            chunk.setdefault("model", stream.model)
            if not wants_usage:
                chunk.pop("usage", None)
            for choice in choices:
                if choice.get("index", 0) == 0 and isinstance(choice.get("finish_reason"), str):
                    ctx.finish_reason = choice["finish_reason"]  # the cache stores only "stop"
                delta = choice.get("delta")
                if not isinstance(delta, dict):
                    delta = choice["delta"] = {}
                content = delta.get("content")
                if isinstance(content, str) and choice.get("index", 0) == 0:
                    ctx.streamed_text.append(content)  # masked, as the cache may keep it
                if restoring is not None:
                    restoring.choice(choice, delta)
                if first:
                    delta.setdefault("role", "assistant")
                choice.setdefault("index", 0)
                choice.setdefault("finish_reason", None)
            if choices:
                first = False
            yield chunk
        if restoring is not None and (tail := restoring.rest(chunk_id, created, stream.model)):
            yield tail  # the stream ended inside something placeholder-like
        if wants_usage and stream.usage is None:
            # The upstream sent no usage: the client asked for it, so count what was streamed.
            ctx.usage = counted_usage(ctx)
            yield {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": stream.model,
                "choices": [],
                "usage": usage_body(ctx.usage),
            }
    except GatewayError as exc:
        ctx.fail(exc)
        yield dict(exc.body())
    except Exception:
        # Escaping here would tear the client's stream (no error event, no [DONE]) and leave the
        # request recorded as a client disconnect, or not at all before the first byte.
        log.exception("request %s: relaying the stream failed", ctx.request_id)
        error = InternalError(f"Internal error (request id {ctx.request_id}).")
        ctx.fail(error)
        yield dict(error.body())
    finally:
        if stream.usage is not None:
            ctx.usage = stream.usage
        ctx.model = stream.model
        await stream.aclose()


class _Restoring:
    """Restores a masked request's placeholders in a stream: a :class:`Restorer` per choice's
    content and per tool call's arguments, flushed when the choice finishes."""

    def __init__(self, ctx: RequestContext) -> None:
        assert ctx.masking is not None
        self._masking = ctx.masking
        self._content: dict[int, Restorer] = {}
        self._arguments: dict[tuple[int, int], Restorer] = {}

    @classmethod
    def of(cls, ctx: RequestContext) -> _Restoring | None:
        masking = ctx.masking
        if masking is None or not masking.answer_masked or not masking.placeholders:
            return None
        return cls(ctx)

    def choice(self, choice: dict[str, Any], delta: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        content = delta.get("content")
        if isinstance(content, str):
            restorer = self._content.get(index)
            if restorer is None:
                restorer = self._content[index] = self._masking.restorer()
            delta["content"] = restorer.feed(content)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    key = (index, call.get("index", 0))
                    restorer = self._arguments.get(key)
                    if restorer is None:
                        restorer = self._arguments[key] = self._masking.restorer(json_text=True)
                    function["arguments"] = restorer.feed(function["arguments"])
        if isinstance(choice.get("finish_reason"), str):
            self._flush(index, delta)

    def _flush(self, index: int, delta: dict[str, Any]) -> None:
        restorer = self._content.pop(index, None)
        tail = restorer.flush() if restorer is not None else ""
        if tail:
            delta["content"] = (delta.get("content") or "") + tail
        for key in [k for k in self._arguments if k[0] == index]:
            tail = self._arguments.pop(key).flush()
            if tail:
                calls = delta.setdefault("tool_calls", [])
                calls.append({"index": key[1], "function": {"arguments": tail}})

    def rest(self, chunk_id: str, created: int, model: str) -> dict[str, Any] | None:
        """A last chunk with what is still held back (no choice finished), or None."""
        choices = []
        for index in sorted({*self._content, *(k[0] for k in self._arguments)}):
            delta: dict[str, Any] = {}
            self._flush(index, delta)
            if delta:
                choices.append({"index": index, "delta": delta, "finish_reason": None})
        if not choices:
            return None
        return {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
