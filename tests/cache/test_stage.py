"""The cache stage inside the real pipeline stages, with fake tiers and a real diskcache store."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cache import CacheStage, DiskCacheStore, RedisStore, build_cache_store, cache_key
from gateway.cache.store import CacheStore
from gateway.config import parse_config
from gateway.errors import UpstreamError, UpstreamUnavailable
from gateway.pipeline.context import CLIENT_CLOSED, RequestContext
from gateway.pipeline.core import Pipeline
from gateway.pipeline.stages import (
    CallTier,
    CountTokens,
    Parse,
    RecordInLedger,
    Route,
    Settle,
    Stage,
)
from gateway.pipeline.streaming import relay
from gateway.runtime import Runtime, build_runtime
from gateway.tiers.base import Completion, TokenLogprob
from gateway.usage import Usage
from tests.support.fakes import FakeLedger
from tests.support.mock_upstream import free_port

CONFIG = """
upstreams:
  local: {{ base_url: "http://127.0.0.1:9/v1", local: true }}
tiers:
  small: {{ upstream: local, model: small-model }}
  large: {{ upstream: local, model: large-model }}
models:
  auto: {{ route: auto }}
  pinned-large: {{ route: large }}
router:
  default: small
  fallbacks: {{}}
tenants:
  acme: {{ keys: [{{ sha256: "{a}" }}] }}
  globex: {{ keys: [{{ sha256: "{b}" }}] }}
  nocache: {{ keys: [{{ sha256: "{c}" }}], cache: false }}
cache:
  ttl_s: 60
  enabled: {enabled}
  personalised: {personalised}
  admit_after: 1
"""

QUESTION = "How do I return an item?"


@dataclass
class Answer:
    text: str = ""
    finish_reason: str = "stop"
    usage: Usage = Usage(prompt_tokens=20, completion_tokens=7)
    # False: the upstream reports no usage (no usage chunk, no ``usage`` in the body).
    send_usage: bool = True
    # Streams only: raise this after the first content chunk.
    fail_midway: UpstreamError | None = None
    # Raise this instead of answering.
    error: UpstreamError | None = None


class FakeStream:
    def __init__(self, model: str, answer: Answer) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.logprobs: list[TokenLogprob] = []
        self._answer = answer

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        text = self._answer.text
        yield choice({"role": "assistant", "content": ""})
        for i in range(0, len(text), 5):
            yield choice({"content": text[i : i + 5]})
            if self._answer.fail_midway is not None:
                raise self._answer.fail_midway
        yield choice({}, self._answer.finish_reason)
        if self._answer.send_usage:
            self.usage = self._answer.usage
            yield {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    async def aclose(self) -> None:
        return None


class FakeTier:
    """A tier that answers from a queue (default: an echo) and keeps every payload it got."""

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.model = model
        self.queue: list[Answer] = []
        self.history: list[dict[str, Any]] = []

    def enqueue(self, answer: Answer) -> None:
        self.queue.append(answer)

    def _next(self, payload: dict[str, Any]) -> Answer:
        self.history.append(payload)
        answer = self.queue.pop(0) if self.queue else Answer()
        if answer.error is not None:
            raise answer.error
        if not answer.text:
            answer.text = f"{self.name} says: {payload['messages'][-1]['content']}"
        return answer

    async def complete(self, payload: dict[str, Any]) -> Completion:
        answer = self._next(payload)
        body = {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1,
            "model": self.model,
            "system_fingerprint": "fp_test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        }
        if not answer.send_usage:
            del body["usage"]
        usage = answer.usage if answer.send_usage else None
        return Completion(body=body, model=self.model, usage=usage)

    async def stream(self, payload: dict[str, Any]) -> FakeStream:
        return FakeStream(self.model, self._next(payload))

    async def aclose(self) -> None:
        return None


@dataclass
class Gateway:
    runtime: Runtime
    tiers: dict[str, FakeTier]
    store: CacheStore
    pipeline: Pipeline
    ledger: FakeLedger

    @property
    def calls(self) -> int:
        return sum(len(t.history) for t in self.tiers.values())

    def context(
        self, body: dict[str, Any], tenant: str = "acme", headers: dict[str, str] | None = None
    ) -> RequestContext:
        raw = json.dumps(body).encode()

        async def read_body() -> bytes:
            return raw

        ctx = RequestContext(
            runtime=self.runtime,
            request_id=uuid.uuid4().hex,
            headers=headers or {},
            read_body=read_body,
        )
        ctx.tenant = tenant  # what the auth stage does
        return ctx

    async def send(
        self, body: dict[str, Any], tenant: str = "acme", headers: dict[str, str] | None = None
    ) -> RequestContext:
        """One non-stream request through the pipeline, finished as the HTTP layer does."""
        ctx = self.context(body, tenant, headers)
        try:
            await self.pipeline.start(ctx)
        finally:
            await self.pipeline.finish(ctx)
        return ctx

    async def send_stream(
        self,
        body: dict[str, Any],
        tenant: str = "acme",
        headers: dict[str, str] | None = None,
        *,
        leave_after: int | None = None,
    ) -> tuple[RequestContext, list[dict[str, Any]]]:
        """One stream request, relayed as the HTTP layer relays it (optionally left early)."""
        ctx = self.context({**body, "stream": True}, tenant, headers)
        chunks: list[dict[str, Any]] = []
        await self.pipeline.start(ctx)
        events = relay(ctx)
        try:
            async for chunk in events:
                chunks.append(chunk)
                if leave_after is not None and len(chunks) >= leave_after:
                    ctx.status = CLIENT_CLOSED
                    break
        finally:
            await events.aclose()
            await self.pipeline.finish(ctx)
        return ctx, chunks


def make_gateway(
    data_dir: Path,
    store: CacheStore | None = None,
    *,
    enabled: bool = True,
    personalised: bool = False,
) -> Gateway:
    text = CONFIG.format(
        a="a" * 64,
        b="b" * 64,
        c="c" * 64,
        enabled=str(enabled).lower(),
        personalised=str(personalised).lower(),
    )
    loaded = parse_config(text, source="test.yaml", env={})
    tiers = {"small": FakeTier("small", "small-model"), "large": FakeTier("large", "large-model")}
    ledger = FakeLedger()
    runtime = build_runtime(
        loaded,
        data_dir=data_dir,
        ledger=ledger,
        env={},
        announce=lambda _: None,
        warn=lambda _: None,
        tiers=tiers,
    )
    if store is None:
        store = DiskCacheStore(data_dir / "cache", max_bytes=16 * 1024 * 1024)
    stages: list[Stage] = [
        RecordInLedger(),
        Parse(),
        CountTokens(),
        Route(),
        Settle(),
        CacheStage(store),
        CallTier(),
    ]
    return Gateway(runtime, tiers, store, Pipeline(stages), ledger)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = make_gateway(tmp_path)
    yield gateway
    await gateway.store.aclose()


def chat(text: str = QUESTION, **params: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **params}


def text_of(ctx: RequestContext) -> str:
    assert ctx.completion is not None
    return ctx.completion.text


async def test_a_miss_is_answered_by_the_tier_stored_and_then_served_from_the_cache(
    gw: Gateway,
) -> None:
    first = await gw.send(chat())
    assert first.served_by == "small"
    assert first.response_headers["x-switchboard-cache"] == "miss"
    assert gw.calls == 1

    second = await gw.send(chat())
    assert gw.calls == 1  # the tier was not called again
    assert second.served_by == "cache"
    assert text_of(second) == text_of(first)
    headers = second.response_headers
    assert headers["x-switchboard-route"] == "cache"
    assert headers["x-switchboard-cache"] == "hit"
    assert headers["x-switchboard-model"] == "small-model"
    assert second.model == "small-model"
    # The ledger sees the tokens the hit saved, at no cost.
    assert second.usage == Usage(prompt_tokens=20, completion_tokens=7)
    assert second.cost_micros == 0
    assert headers["x-switchboard-cost-usd"] == first.response_headers["x-switchboard-cost-usd"]
    record = gw.ledger.history[-1]
    assert record.cache_hit and record.route == "cache" and record.cost_micros == 0
    assert (record.prompt_tokens, record.completion_tokens) == (20, 7)


async def test_a_hit_has_a_fresh_id_and_created_time_and_the_stored_body(gw: Gateway) -> None:
    first = await gw.send(chat())
    second = await gw.send(chat())
    assert first.completion is not None and second.completion is not None
    body = second.completion.body
    assert body["id"] == f"chatcmpl-{second.request_id}" != first.completion.body["id"]
    assert body["created"] > 1
    assert body["object"] == "chat.completion"
    assert body["model"] == "small-model"
    assert body["system_fingerprint"] == "fp_test"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 27


async def test_a_stream_request_hit_replays_the_answer_as_openai_chunks(gw: Gateway) -> None:
    stored = await gw.send(chat())
    ctx, chunks = await gw.send_stream(chat(stream_options={"include_usage": True}))
    assert gw.calls == 1
    assert ctx.served_by == "cache"
    assert ctx.response_headers["x-switchboard-cache"] == "hit"
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == f"chatcmpl-{ctx.request_id}"
        assert chunk["model"] == "small-model"
        assert isinstance(chunk["created"], int)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(content) == text_of(stored)
    assert len([piece for piece in content if piece]) > 1  # in pieces, as a stream comes
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}
    assert ctx.usage == Usage(prompt_tokens=20, completion_tokens=7)
    assert ctx.cost_micros == 0


async def test_a_replayed_stream_sends_no_usage_chunk_unless_asked(gw: Gateway) -> None:
    await gw.send(chat())
    ctx, chunks = await gw.send_stream(chat())
    assert ctx.served_by == "cache"
    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)


async def test_a_streamed_answer_is_stored_and_served_to_a_non_stream_request(
    gw: Gateway,
) -> None:
    gw.tiers["small"].enqueue(Answer(text="Send it back within 30 days, 退货请在30天内寄回."))
    ctx, _ = await gw.send_stream(chat())
    assert ctx.served_by == "small"
    assert ctx.response_headers["x-switchboard-cache"] == "miss"

    hit = await gw.send(chat())
    assert hit.served_by == "cache"
    assert text_of(hit) == "Send it back within 30 days, 退货请在30天内寄回."
    assert hit.completion is not None
    message = hit.completion.body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "Send it back within 30 days, 退货请在30天内寄回.",
        "refusal": None,
    }
    assert hit.usage == Usage(prompt_tokens=20, completion_tokens=7)


async def test_a_stream_without_usage_is_stored_with_counted_usage(gw: Gateway) -> None:
    gw.tiers["small"].enqueue(Answer(text="Yes, within 30 days.", send_usage=False))
    ctx, _ = await gw.send_stream(chat())
    assert ctx.served_by == "small"
    hit = await gw.send(chat())
    assert hit.served_by == "cache"
    assert hit.usage is not None and hit.usage.estimated
    assert hit.usage.completion_tokens == gw.runtime.tokens.count_text("Yes, within 30 days.")
    assert hit.usage.prompt_tokens == ctx.prompt_tokens > 0


@pytest.mark.parametrize("finish_reason", ["length", "content_filter"])
async def test_answers_that_did_not_finish_with_stop_are_not_stored(
    gw: Gateway, finish_reason: str
) -> None:
    gw.tiers["small"].enqueue(Answer(text="Send it back wi", finish_reason=finish_reason))
    await gw.send(chat())
    gw.tiers["small"].enqueue(Answer(text="Send it back wi", finish_reason=finish_reason))
    await gw.send_stream(chat())
    again = await gw.send(chat())
    assert again.served_by == "small"
    assert gw.calls == 3


async def test_a_stream_the_client_left_is_not_stored(gw: Gateway) -> None:
    gw.tiers["small"].enqueue(Answer(text="A long answer that the client never saw in full."))
    ctx, _ = await gw.send_stream(chat(), leave_after=2)
    assert ctx.status == CLIENT_CLOSED
    again = await gw.send(chat())
    assert again.served_by == "small"


async def test_a_stream_that_failed_midway_is_not_stored(gw: Gateway) -> None:
    failure = UpstreamError("upstream went away", code="upstream_disconnected")
    gw.tiers["small"].enqueue(Answer(text="A partial answer", fail_midway=failure))
    ctx, chunks = await gw.send_stream(chat())
    assert ctx.error is not None and ctx.status == 502
    assert "error" in chunks[-1]
    again = await gw.send(chat())
    assert again.served_by == "small"


async def test_a_failed_request_stores_nothing_and_the_next_one_asks_the_tier(
    gw: Gateway,
) -> None:
    gw.tiers["small"].enqueue(Answer(error=UpstreamUnavailable("upstream is down")))
    with pytest.raises(UpstreamUnavailable):
        await gw.send(chat())
    assert gw.ledger.history[-1].status == 503
    again = await gw.send(chat())
    assert again.served_by == "small"
    assert again.response_headers["x-switchboard-cache"] == "miss"


async def test_a_completion_marked_failed_after_the_answer_is_not_stored(gw: Gateway) -> None:
    ctx = gw.context(chat())
    await gw.pipeline.start(ctx)
    ctx.fail(UpstreamError("something broke on the way out"))
    await gw.pipeline.finish(ctx)
    again = await gw.send(chat())
    assert again.served_by == "small"


async def test_no_cache_skips_the_lookup_but_stores_the_fresh_answer(gw: Gateway) -> None:
    await gw.send(chat())
    gw.tiers["small"].enqueue(Answer(text="A fresher answer."))
    fresh = await gw.send(chat(), headers={"x-switchboard-cache": "no-cache"})
    assert fresh.served_by == "small"
    assert fresh.response_headers["x-switchboard-cache"] == "bypass"
    assert fresh.response_headers["x-switchboard-cache-reason"] == "no-cache"
    hit = await gw.send(chat())
    assert hit.served_by == "cache"
    assert text_of(hit) == "A fresher answer."


async def test_no_store_does_not_store_but_may_be_served_from_the_cache(gw: Gateway) -> None:
    first = await gw.send(chat(), headers={"x-switchboard-cache": "no-store"})
    assert first.served_by == "small"
    second = await gw.send(chat())
    assert second.served_by == "small"  # the first answer was not stored
    third = await gw.send(chat(), headers={"x-switchboard-cache": "No-Store"})
    assert third.served_by == "cache"  # the second one was


async def test_no_cache_and_no_store_together_bypass_the_cache(gw: Gateway) -> None:
    both = {"x-switchboard-cache": "no-cache, no-store"}
    await gw.send(chat(), headers=both)
    await gw.send(chat(), headers=both)
    assert gw.calls == 2
    assert (await gw.send(chat())).served_by == "small"


async def test_answers_are_never_served_to_another_tenant(gw: Gateway) -> None:
    await gw.send(chat(), tenant="acme")
    other = await gw.send(chat(), tenant="globex")
    assert other.served_by == "small"
    assert other.response_headers["x-switchboard-cache"] == "miss"
    assert (await gw.send(chat(), tenant="globex")).served_by == "cache"


async def test_other_parameters_or_messages_miss(gw: Gateway) -> None:
    await gw.send(chat("I want a refund"))
    assert (await gw.send(chat("I don't want a refund"))).served_by == "small"
    assert (await gw.send(chat("I want a refund", temperature=0.9))).served_by == "small"
    assert (
        await gw.send({**chat("I want a refund"), "model": "pinned-large"})
    ).served_by == "large"
    assert (await gw.send(chat("I  want a refund "))).served_by == "cache"


async def test_personalised_requests_are_not_cached_by_default(gw: Gateway) -> None:
    text = "Where is my order 2024051200123?"
    first = await gw.send(chat(text))
    assert first.response_headers["x-switchboard-cache"] == "bypass"
    assert first.response_headers["x-switchboard-cache-reason"] == "personalised"
    second = await gw.send(chat(text))
    assert second.served_by == "small"
    assert gw.calls == 2


async def test_personalised_requests_are_cached_when_configured(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, personalised=True)
    try:
        text = "我的订单 2024051200123 到哪了？"
        await gw.send(chat(text))
        assert (await gw.send(chat(text))).served_by == "cache"
    finally:
        await gw.store.aclose()


async def test_uncacheable_requests_say_why(gw: Gateway) -> None:
    ctx = await gw.send(chat(n=2))
    assert ctx.response_headers["x-switchboard-cache"] == "bypass"
    assert ctx.response_headers["x-switchboard-cache-reason"] == "uncacheable: n > 1"


async def test_a_tenant_without_the_cache_neither_reads_nor_writes_it(gw: Gateway) -> None:
    first = await gw.send(chat(), tenant="nocache")
    second = await gw.send(chat(), tenant="nocache")
    assert (first.served_by, second.served_by) == ("small", "small")
    assert "x-switchboard-cache" not in second.response_headers


async def test_a_disabled_cache_neither_reads_nor_writes(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, enabled=False)
    try:
        await gw.send(chat())
        second = await gw.send(chat())
        assert second.served_by == "small"
        assert "x-switchboard-cache" not in second.response_headers
    finally:
        await gw.store.aclose()
    assert build_cache_store(gw.runtime.config, tmp_path) is None


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b'{"v": 1, "model": "m", "body": {}, "prompt_tokens": 1, "completion_tokens": 1}',
        b'{"v": 99, "model": "m", "body": {}, "prompt_tokens": 1, "completion_tokens": 1}',
    ],
)
async def test_an_unreadable_entry_is_a_miss(gw: Gateway, stored: bytes) -> None:
    key = cache_key("acme", chat())
    assert key is not None
    await gw.store.set(key, stored, ttl_s=60)
    ctx = await gw.send(chat())
    assert ctx.served_by == "small"
    assert ctx.response_headers["x-switchboard-cache"] == "miss"


async def test_requests_are_answered_when_the_cache_backend_is_down(tmp_path: Path) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "t:", max_entries=10)
    gw = make_gateway(tmp_path, store)
    try:
        first = await gw.send(chat())
        second = await gw.send(chat())
    finally:
        await store.aclose()
    assert (first.served_by, second.served_by) == ("small", "small")
    assert second.response_headers["x-switchboard-cache"] == "miss"


def test_the_factory_builds_the_backend_the_config_names(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    config = gw.runtime.config
    embedded = build_cache_store(config, tmp_path)
    assert isinstance(embedded, DiskCacheStore)
    assert embedded.directory == tmp_path / "cache"
    shared = build_cache_store(
        parse_config(
            CONFIG.format(a="a" * 64, b="b" * 64, c="c" * 64, enabled="true", personalised="false")
            + "state: redis\nredis: { url: 'redis://127.0.0.1:6379/15' }\n",
            env={},
        ).config,
        tmp_path,
    )
    assert isinstance(shared, RedisStore)
