"""A bot changes only base_url and key: the official openai client, sync and async, just works."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import httpx
import openai

from tests.conftest import ledger_record
from tests.support.gateway_server import GatewayServer
from tests.support.mock_upstream import MockUpstream
from tests.support.openai_spec import SpecValidator

HELLO = [{"role": "user", "content": "where is my parcel"}]


def test_non_streaming_answer_reaches_the_bot_with_explaining_headers(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    completion = raw.parse()

    assert completion.choices[0].message.content == "echo: where is my parcel"
    assert raw.headers["x-switchboard-route"] == "small"
    assert raw.headers["x-switchboard-model"] == "mock-small"
    assert raw.headers["x-switchboard-reason"] == "no rule matched: default tier"
    prompt, completion_tokens = upstream.usage_for(upstream.history[-1].json or {})
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        prompt,
        completion_tokens,
    )
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert record.tenant == "acme"
    assert record.requested_model == "gpt-4o-mini"
    assert (record.route, record.model, record.status) == ("small", "mock-small", 200)
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, completion_tokens)
    # mock-small costs $0.1 / $0.2 per million tokens, i.e. 0.1 / 0.2 µUSD per token.
    exact = prompt * Decimal("0.1") + completion_tokens * Decimal("0.2")
    assert record.cost_micros == int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))
    assert raw.headers["x-switchboard-cost-usd"] == f"0.{record.cost_micros:06d}"


def test_upstream_receives_the_tier_model_and_the_provider_key_not_the_tenant_key(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    client.chat.completions.create(model="auto", messages=HELLO, temperature=0.2, seed=7)

    sent = upstream.history[-1]
    assert sent.json is not None
    assert sent.json["model"] == "mock-small"
    assert sent.json["temperature"] == 0.2
    assert sent.json["seed"] == 7
    assert sent.json["max_tokens"] == 256  # the tier's output cap, since the bot set none
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"


def test_streaming_answer_with_usage_chunk_when_asked(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: where is my parcel"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_streaming_without_include_usage_sends_no_usage_only_chunk(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    chunks = list(client.chat.completions.create(model="auto", messages=HELLO, stream=True))

    assert all(len(c.choices) == 1 for c in chunks)  # chunk.choices[0] is safe on every chunk
    assert all(c.usage is None for c in chunks)
    # ...while upstream was still asked for usage, which is what the ledger bills by.
    assert (upstream.history[-1].json or {})["stream_options"] == {"include_usage": True}


async def test_async_client_streams_and_not(
    aclient: openai.AsyncOpenAI, upstream: MockUpstream
) -> None:
    completion = await aclient.chat.completions.create(model="auto", messages=HELLO)
    assert completion.choices[0].message.content == "echo: where is my parcel"

    stream = await aclient.chat.completions.create(model="auto", messages=HELLO, stream=True)
    parts = [c.choices[0].delta.content or "" async for c in stream]
    assert "".join(parts) == "echo: where is my parcel"


def test_raw_responses_and_every_sse_event_match_openais_spec(
    gateway: GatewayServer, upstream: MockUpstream, spec: SpecValidator
) -> None:
    headers = {"authorization": "Bearer sk-test-acme-0123456789"}
    url = gateway.base_url + "/chat/completions"
    with httpx.Client(timeout=10) as http:
        plain = http.post(url, headers=headers, json={"model": "auto", "messages": HELLO})
        spec.validate("CreateChatCompletionResponse", plain.json())

        body = {
            "model": "auto",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        streamed = http.post(url, headers=headers, json=body)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        chunks = spec.validate_sse(streamed.text)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        # The final cost travels as an SSE comment, since headers left before it was known.
        assert ": x-switchboard-cost-usd=0.0000" in streamed.text

        models = http.get(gateway.base_url + "/models", headers=headers)
        spec.validate("ListModelsResponse", models.json())
        error = http.post(url, headers=headers, json={"model": "nope", "messages": HELLO})
        spec.validate("ErrorResponse", error.json())
