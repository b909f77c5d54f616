"""An instant OpenAI-compatible upstream for benchmarks: its own process, as little work as can be.

    .venv/bin/python bench/mock_upstream.py --port 9001 [--delay-ms 0]

Answers ``POST /v1/chat/completions`` with a fixed, precomputed ``chat.completion`` (usage
included), or, when the body asks for ``"stream": true``, a fixed SSE stream (role chunk, two
content chunks, finish chunk, usage chunk, ``[DONE]``) in one write. It never decodes JSON: the
only question it asks of a body is whether it contains ``"stream": true``. HTTP/1.1 keep-alive,
parsed with httptools on uvloop (both come with ``uvicorn[standard]``), so one core serves tens of
thousands of requests per second and the mock stays out of the way of what is measured.

``GET /v1/models`` and ``GET /healthz`` answer too; anything else is a 404. Prints
``mock-upstream ready on http://127.0.0.1:PORT`` on stdout once listening. Only binds 127.0.0.1.
Not the tests' mock (``tests/support/mock_upstream.py``), which can misbehave on purpose and is
slower for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from typing import Any

import httptools

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
MODEL = "bench-small"
CREATED = 1_700_000_000


def _completion_body() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Your parcel is on its way.",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        },
        separators=(",", ":"),
    ).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


def _stream_body() -> bytes:
    events = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Your parcel "}),
        _chunk({"content": "is on its way."}),
        _chunk({}, "stop"),
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        },
    ]
    text = "".join(f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events)
    return (text + "data: [DONE]\n\n").encode()


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _chunked_response(content_type: str, body: bytes) -> bytes:
    # Chunked like a real streaming server, so the gateway's client takes its streaming path.
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"content-type: {content_type}\r\n"
        "cache-control: no-cache\r\n"
        "transfer-encoding: chunked\r\n"
        "\r\n"
    ).encode()
    return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


COMPLETION = _response("200 OK", "application/json", _completion_body())
STREAM = _chunked_response("text/event-stream", _stream_body())
MODELS = _response(
    "200 OK",
    "application/json",
    json.dumps(
        {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}],
        }
    ).encode(),
)
HEALTH = _response("200 OK", "application/json", b'{"status":"ok"}')
NOT_FOUND = _response(
    "404 Not Found",
    "application/json",
    b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}',
)


class _Connection(asyncio.Protocol):
    """One client connection; requests on it are answered in order (no pipelining reorder)."""

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._pending: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only look-alikes.
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        if method == b"POST" and path == b"/v1/chat/completions":
            answer = STREAM if _STREAM_RE.search(b"".join(self._body)) else COMPLETION
        elif method == b"GET" and path == b"/v1/models":
            answer = MODELS
        elif method == b"GET" and path == b"/healthz":
            answer = HEALTH
        else:
            answer = NOT_FOUND
        if self._delay_s > 0:
            asyncio.get_running_loop().call_later(self._delay_s, self._write, answer)
        else:
            self._write(answer)

    def _write(self, answer: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer)


async def serve(port: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(delay_s), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"mock-upstream ready on http://127.0.0.1:{bound}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="fixed delay before every answer (default 0)"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # still works, just slower
        asyncio.run(serve(args.port, args.delay_ms / 1000))
    else:
        uvloop.run(serve(args.port, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
