"""POST /v1/embeddings (passed to the configured model, priced, recorded) and POST /v1/completions
(legacy text completions, routed like chat)."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from gateway.money import micros_from_usd
from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, GatewayServer
from tests.support.mock_upstream import MockUpstream, Reply, Status
from tests.support.openai_spec import SpecValidator


def test_embeddings_come_from_the_configured_model_and_are_priced_in_the_ledger(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-ada-002", input=["where is my parcel", "refund please"]
    )
    result = raw.parse()

    assert [d.embedding for d in result.data] == [
        pytest.approx(upstream.embedding_for("where is my parcel")),
        pytest.approx(upstream.embedding_for("refund please")),
    ]
    sent = upstream.history[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.json is not None and sent.json["model"] == "text-embedding-3-small"
    assert raw.headers["x-switchboard-route"] == "embeddings"
    spec.validate("CreateEmbeddingResponse", raw.http_response.json())
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.model, record.requested_model) == (
        "embeddings",
        "text-embedding-3-small",
        "text-embedding-ada-002",
    )
    assert record.prompt_tokens == 6  # the mock reports words
    # text-embedding-3-small: $0.02 per million tokens.
    assert record.cost_micros == micros_from_usd(6 * Decimal("2E-8"))


def test_embeddings_without_upstream_usage_are_counted(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    upstream.enqueue(Reply("", include_usage=False))
    raw = client.embeddings.with_raw_response.create(model="any", input="where is my parcel")

    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert record.usage_estimated is True and record.prompt_tokens > 0
    assert raw.parse().usage.prompt_tokens == record.prompt_tokens


def test_embeddings_errors_are_openai_errors_and_recorded(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="any", input=[])
    upstream.enqueue(Status(500))
    with pytest.raises(openai.InternalServerError) as info:
        client.embeddings.create(model="any", input="x")
    request_id = info.value.response.headers["x-switchboard-request-id"]
    assert ledger_record(gateway, request_id).status == 502


def test_legacy_completions_are_routed_like_chat(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    raw = client.completions.with_raw_response.create(
        model="auto", prompt="where is my parcel", max_tokens=20
    )
    completion = raw.parse()

    assert completion.object == "text_completion"
    assert completion.choices[0].text == "echo: where is my parcel"
    assert upstream.history[-1].json is not None
    assert upstream.history[-1].json["messages"] == [
        {"role": "user", "content": "where is my parcel"}
    ]
    spec.validate("CreateCompletionResponse", raw.http_response.json())
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.status) == ("small", 200)


def test_legacy_completions_stream(gateway: GatewayServer, upstream: MockUpstream) -> None:
    # Not strict: OpenAI's own legacy stream sends `finish_reason: null` before the last chunk,
    # which the SDK's strict model (a required Literal) rejects.
    with openai.OpenAI(base_url=gateway.base_url, api_key=ACME_KEY, max_retries=0) as client:
        chunks = list(client.completions.create(model="auto", prompt="refund please", stream=True))

    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: refund please"


def test_legacy_completions_reject_token_array_prompts(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="auto", prompt=[[1, 2, 3]])
    assert "prompt" in str(info.value)
