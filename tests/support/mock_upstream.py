"""An OpenAI-compatible upstream for tests, served for real on 127.0.0.1 from a background thread.

Why a real server rather than a patched client: the gateway's hosted tier talks HTTP through
aiohttp, and the faults worth testing (a connection dropped mid-stream, a stalled socket, a body
that is not JSON, a refused port) only exist on a real socket.

By default every chat request is answered with ``"echo: " + <last user message>`` and usage computed
by :meth:`MockUpstream.usage_for`. To misbehave, queue behaviours; each chat request consumes one::

    with MockUpstream() as upstream:
        upstream.enqueue(Status(429, headers={"retry-after": "2"}), CutStream(after_chunks=2))
        ...  # first chat request gets a 429, the second a stream cut after two content chunks
        assert upstream.history[-1].json["model"] == "gpt-4o-mini"

Behaviours (frozen dataclasses):

- :class:`Reply` - answer with given text, usage and model.
- :class:`Status` - an HTTP error status with a body and headers.
- :class:`Delay` - sleep, then apply another behaviour (or the default echo).
- :class:`MalformedJson` - 200 ``application/json`` whose body is not JSON.
- :class:`CutStream` - drop the connection after N content chunks, without ``[DONE]``.
- :class:`StallStream` - go silent for a while after N content chunks.
- :class:`MalformedSse` - a ``data: {not json`` event after N content chunks.
- :class:`Drop` - close the connection before sending a single byte.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = [
    "Behaviour",
    "CutStream",
    "Delay",
    "Drop",
    "MalformedJson",
    "MalformedSse",
    "MockUpstream",
    "RecordedRequest",
    "Reply",
    "StallStream",
    "Status",
    "closed_port_url",
    "free_port",
]

# --------------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class Reply:
    """Answer with ``content`` instead of the echo.

    ``prompt_tokens`` / ``completion_tokens`` override the computed usage (each independently).
    ``include_usage=False`` omits ``usage`` from a non-stream answer and sends no usage chunk on a
    stream even when the client asked for one, as some upstreams do: it exercises the gateway's own
    token counting. ``model`` overrides the model name echoed from the request.
    """

    content: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    include_usage: bool = True
    model: str | None = None


@dataclass(frozen=True)
class Status:
    """Reply with HTTP ``status``.

    ``body`` is sent as JSON when a dict, as ``text/plain`` when a str (unless ``headers`` set a
    content type), and defaults to an OpenAI error body. ``headers`` are added verbatim, e.g.
    ``Status(429, headers={"retry-after": "2"})``.
    """

    status: int
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Delay:
    """Sleep ``seconds`` before answering with ``then`` (default: the echo). For timeout tests."""

    seconds: float
    then: Behaviour | None = None


@dataclass(frozen=True)
class MalformedJson:
    """A 200 with ``content-type: application/json`` and a truncated, unparsable body."""


@dataclass(frozen=True)
class CutStream:
    """Send the role chunk and ``after_chunks`` content chunks, then close the connection.

    No finish chunk and no ``[DONE]``; the chunked body is left incomplete, so an aiohttp client
    sees ``ClientPayloadError``. On a non-stream request the JSON body is cut halfway instead.
    """

    after_chunks: int


@dataclass(frozen=True)
class StallStream:
    """After ``after_chunks`` content chunks go silent for ``seconds``, then finish normally.

    On a non-stream request the stall happens halfway through the JSON body.
    """

    after_chunks: int
    seconds: float


@dataclass(frozen=True)
class MalformedSse:
    """After ``after_chunks`` content chunks send a ``data: {not json`` event, then carry on.

    The stream still ends with ``[DONE]``, so the only fault is the unparsable event. On a
    non-stream request this behaves like :class:`MalformedJson`.
    """

    after_chunks: int


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending any response (the client sees a disconnect)."""


Behaviour: TypeAlias = (
    Reply | Status | Delay | MalformedJson | CutStream | StallStream | MalformedSse | Drop
)
_StreamFault: TypeAlias = CutStream | StallStream | MalformedSse


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the mock received it; ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port_url() -> str:
    """A base URL where nothing listens, for connection-refused tests."""
    return f"http://127.0.0.1:{free_port()}/v1"


def error_body(
    message: str, type_: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_MALFORMED_JSON = b'{"id": "x", "choices": ['
_MALFORMED_SSE = b"data: {not json\n\n"
_WORD = re.compile(r"\s*\S+")


def _message_text(message: object) -> str:
    """The text of one chat message; ``content`` may be a string or a list of parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _pieces(content: str) -> list[str]:
    """Split an answer into stream deltas: ``"word"`` then ``" word"``; they concatenate back."""
    pieces = _WORD.findall(content)
    tail = content[sum(map(len, pieces)) :]
    if pieces and tail:
        pieces[-1] += tail
    return pieces


def _token_logprob(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.1, "bytes": None, "top_logprobs": []}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@dataclass(frozen=True)
class _Answer:
    """What one chat request is answered with, once the behaviour is resolved."""

    id: str
    model: str
    content: str
    prompt_tokens: int
    completion_tokens: int
    include_usage: bool
    logprobs: bool


# --------------------------------------------------------------------------- server


class MockUpstream:
    """An OpenAI-compatible server on ``127.0.0.1:<free port>``, run in its own thread and loop.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``api_key`` makes every request
    without ``Authorization: Bearer <api_key>`` fail with 401. ``chunk_delay`` sleeps between
    stream chunks. ``models`` are listed by ``GET /v1/models``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        models: Sequence[str] = ("mock-small", "mock-large"),
    ) -> None:
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.models = tuple(models)
        self._created = int(time.time())
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._history: list[RecordedRequest] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> MockUpstream:
        """Start serving; returns once the port is bound (raises if binding failed)."""
        if self._thread is not None:
            raise RuntimeError("MockUpstream is already running")
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="mock-upstream", daemon=True
        )
        self._thread.start()
        try:
            self._port = started.result(timeout=10)
        except BaseException:
            self._thread.join(timeout=10)
            self._thread = None
            raise
        return self

    def stop(self) -> None:
        """Cancel in-flight requests, close every connection and join the server thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("MockUpstream thread did not stop within 10 s")
        self._thread = self._loop = self._stopping = None
        self._port = None

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, started: concurrent.futures.Future[int]) -> None:
        # asyncio.run cancels and awaits leftover tasks and closes the loop, so nothing is left
        # pending or unclosed when the thread ends.
        try:
            asyncio.run(self._serve(started))
        except BaseException as exc:
            if started.done():
                raise
            started.set_exception(exc)

    async def _serve(self, started: concurrent.futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model}", self._get_model)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            started.set_result(runner.addresses[0][1])
            await self._stopping.wait()
            # Sleeping handlers (Delay, StallStream) would otherwise hold shutdown up.
            for task in list(self._inflight):
                task.cancel()
        finally:
            await runner.cleanup()

    # ----------------------------------------------------------------- test-facing API

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MockUpstream is not running: call start() or use `with`")
        return self._port

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:PORT/v1``, what the gateway's upstream ``base_url`` is set to."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def history(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._history)

    @property
    def pending(self) -> int:
        """How many queued behaviours have not been consumed yet."""
        with self._lock:
            return len(self._queue)

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each following chat request consumes one, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    def reset(self) -> None:
        """Forget queued behaviours and recorded requests."""
        with self._lock:
            self._queue.clear()
            self._history.clear()

    @staticmethod
    def answer_for(body: dict[str, Any]) -> str:
        """The default answer: ``"echo: "`` plus the text of the last user message."""
        messages = body.get("messages") or []
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return "echo: " + _message_text(message)
        return "echo: "

    @staticmethod
    def usage_for(body: dict[str, Any], answer: str | None = None) -> tuple[int, int]:
        """``(prompt_tokens, completion_tokens)`` exactly as the server reports them.

        prompt_tokens = whitespace-separated words over the text of all messages
        + 3 per message; completion_tokens = words in the answer (default: the echo).
        """
        messages = body.get("messages") or []
        prompt = sum(len(_message_text(m).split()) for m in messages) + 3 * len(messages)
        if answer is None:
            answer = MockUpstream.answer_for(body)
        return prompt, len(answer.split())

    # ----------------------------------------------------------------- HTTP plumbing

    def _next_behaviour(self) -> Behaviour | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record the request, check the key, and track the task so stop() can cancel it."""
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body,
        )
        with self._lock:
            self._history.append(record)
        if self.api_key is not None:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return web.json_response(
                    error_body(
                        "Incorrect API key provided.",
                        "invalid_request_error",
                        code="invalid_api_key",
                    ),
                    status=401,
                )
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            self._inflight.discard(task)

    def _model_object(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self._created, "owned_by": "mock"}

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"object": "list", "data": [self._model_object(m) for m in self.models]}
        )

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if model not in self.models:
            return web.json_response(
                error_body(
                    f"The model '{model}' does not exist",
                    "invalid_request_error",
                    code="model_not_found",
                    param="model",
                ),
                status=404,
            )
        return web.json_response(self._model_object(model))

    @staticmethod
    def embedding_for(text: str) -> list[float]:
        """A deterministic 3-dimensional vector, so tests can check what came back."""
        return [float(len(text)), float(len(text.split())), 0.5]

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/embeddings: one vector per input; usage = words. Consumes a queued Status."""
        body = await request.json()
        behaviour = self._next_behaviour()
        if isinstance(behaviour, Status):
            return self._status(behaviour)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or []]
        words = sum(len(t.split()) for t in texts)
        usage: dict[str, int] | None = {"prompt_tokens": words, "total_tokens": words}
        if isinstance(behaviour, Reply) and not behaviour.include_usage:
            usage = None
        answer: dict[str, Any] = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": self.embedding_for(t)}
                for i, t in enumerate(texts)
            ],
            "model": body.get("model"),
        }
        if usage is not None:
            answer["usage"] = usage
        return web.json_response(answer)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response(
                error_body("Request body must be a JSON object.", "invalid_request_error"),
                status=400,
            )
        for field in ("model", "messages"):
            if field not in body:
                return web.json_response(
                    error_body(
                        f"Missing required parameter: '{field}'.",
                        "invalid_request_error",
                        code="missing_required_parameter",
                        param=field,
                    ),
                    status=400,
                )
        return await self._respond(request, body, self._next_behaviour())

    async def _respond(
        self, request: web.Request, body: dict[str, Any], behaviour: Behaviour | None
    ) -> web.StreamResponse:
        stream = bool(body.get("stream"))
        match behaviour:
            case Delay(seconds=seconds, then=then):
                await asyncio.sleep(seconds)
                return await self._respond(request, body, then)
            case Status():
                return self._status(behaviour)
            case MalformedJson():
                return web.Response(body=_MALFORMED_JSON, content_type="application/json")
            case Drop():
                # Returning an unprepared response on a closed transport makes aiohttp give up
                # quietly ("premature client disconnection") instead of logging an error.
                assert request.transport is not None
                request.transport.close()
                return web.StreamResponse()
            case Reply() | None:
                answer = self._answer(body, behaviour)
                if stream:
                    return await self._stream(request, body, answer, None)
                return web.json_response(self._completion(answer))
            case CutStream() | StallStream() | MalformedSse():
                answer = self._answer(body, None)
                if stream:
                    return await self._stream(request, body, answer, behaviour)
                return await self._broken_json(request, answer, behaviour)

    @staticmethod
    def _status(behaviour: Status) -> web.Response:
        headers = dict(behaviour.headers or {})
        has_type = any(k.lower() == "content-type" for k in headers)
        body = behaviour.body
        if body is None:
            body = error_body(
                f"Mock upstream error {behaviour.status}",
                _ERROR_TYPES.get(behaviour.status, "server_error"),
            )
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            if not has_type:
                headers["Content-Type"] = "application/json"
        else:
            data = body.encode()
            if not has_type:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        return web.Response(status=behaviour.status, body=data, headers=headers)

    def _answer(self, body: dict[str, Any], reply: Reply | None) -> _Answer:
        content = reply.content if reply is not None else self.answer_for(body)
        prompt, completion = self.usage_for(body, content)
        if reply is not None:
            prompt = prompt if reply.prompt_tokens is None else reply.prompt_tokens
            completion = completion if reply.completion_tokens is None else reply.completion_tokens
        return _Answer(
            id=f"chatcmpl-mock-{next(self._ids)}",
            model=reply.model if reply is not None and reply.model else str(body["model"]),
            content=content,
            prompt_tokens=prompt,
            completion_tokens=completion,
            include_usage=reply.include_usage if reply is not None else True,
            logprobs=body.get("logprobs") is True,
        )

    def _completion(self, answer: _Answer) -> dict[str, Any]:
        logprobs = None
        if answer.logprobs:
            tokens = [_token_logprob(word) for word in answer.content.split()]
            logprobs = {"content": tokens, "refusal": None}
        completion: dict[str, Any] = {
            "id": answer.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.content, "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                }
            ],
        }
        if answer.include_usage:
            completion["usage"] = _usage(answer.prompt_tokens, answer.completion_tokens)
        return completion

    async def _broken_json(
        self, request: web.Request, answer: _Answer, fault: _StreamFault
    ) -> web.StreamResponse:
        """The non-stream counterpart of a stream fault: the JSON body is cut or stalled."""
        if isinstance(fault, MalformedSse):
            return web.Response(body=_MALFORMED_JSON, content_type="application/json")
        data = json.dumps(self._completion(answer)).encode()
        half = len(data) // 2
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(data)
        try:
            await response.prepare(request)
            await response.write(data[:half])
            if isinstance(fault, CutStream):
                assert request.transport is not None
                request.transport.close()
                return response
            await asyncio.sleep(fault.seconds)
            await response.write(data[half:])
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; aiohttp notices and stays quiet
        return response

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        answer: _Answer,
        fault: _StreamFault | None,
    ) -> web.StreamResponse:
        """Answer as OpenAI streams do, optionally misbehaving after ``fault.after_chunks``."""
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        send_usage = wants_usage and answer.include_usage
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": answer.id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "choices": choices,
            }
            if send_usage:
                payload["usage"] = None
            return payload

        def choice(
            delta: dict[str, Any], finish: str | None = None, token: str | None = None
        ) -> dict[str, Any]:
            logprobs = None
            if answer.logprobs and token is not None:
                logprobs = {"content": [_token_logprob(token)], "refusal": None}
            return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

        pieces = _pieces(answer.content)
        sent = 0

        async def send(data: bytes) -> None:
            nonlocal sent
            if sent and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await response.write(data)
            sent += 1

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            await send(_sse(chunk([choice({"role": "assistant", "content": ""})])))
            fault_at = min(fault.after_chunks, len(pieces)) if fault is not None else -1
            for index in range(len(pieces) + 1):
                if index == fault_at:
                    match fault:
                        case CutStream():
                            assert request.transport is not None
                            request.transport.close()
                            return response
                        case StallStream(seconds=seconds):
                            await asyncio.sleep(seconds)
                        case MalformedSse():
                            await send(_MALFORMED_SSE)
                if index < len(pieces):
                    piece = pieces[index]
                    await send(_sse(chunk([choice({"content": piece}, None, piece)])))
            await send(_sse(chunk([choice({}, "stop")])))
            if send_usage:
                final = chunk([])
                final["usage"] = _usage(answer.prompt_tokens, answer.completion_tokens)
                await send(_sse(final))
            await send(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-stream; nothing left to tell it
        return response
