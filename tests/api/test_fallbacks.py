"""A tier that fails before its first byte hands the request on; capabilities keep requests away
from tiers that cannot serve them. Every attempt is in the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, TEST_CONFIG, GatewayServer, gateway_env
from tests.support.mock_upstream import CutStream, Delay, MockUpstream, Status
from tests.support.openai_spec import SpecValidator

FALLBACK_CONFIG = TEST_CONFIG.replace(
    "  fallbacks: {}\n", "  fallbacks: { small: [large], large: [small] }\n"
).replace(
    "    max_output_tokens: 256\n",
    "    max_output_tokens: 256\n    capabilities: { tools: false, context_window: 300 }\n",
)
HELLO = [{"role": "user", "content": "where is my parcel"}]


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    assert FALLBACK_CONFIG != TEST_CONFIG
    data_dir: Path = tmp_path_factory.mktemp("fallback-data")
    env = gateway_env(mock_upstream.base_url, MOCK_READ_TIMEOUT="0.5")
    with GatewayServer(data_dir, env, FALLBACK_CONFIG) as server:
        yield server


@pytest.fixture
def http(gateway: GatewayServer, upstream: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=gateway.base_url, headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=10
    ) as client:
        yield client


def test_a_failing_small_tier_falls_back_to_large_and_the_ledger_keeps_the_attempt(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    upstream.enqueue(Status(500))

    response = http.post("/chat/completions", json={"model": "auto", "messages": HELLO})

    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-route"] == "large"
    assert response.headers["x-switchboard-model"] == "gpt-4o"
    assert response.headers["x-switchboard-fallback"] == "small -> large"
    assert [r.json["model"] for r in upstream.history if r.json] == ["mock-small", "gpt-4o"]
    record = ledger_record(gateway, response.headers["x-switchboard-request-id"])
    assert (record.route, record.model, record.status) == ("large", "gpt-4o", 200)
    assert len(record.attempts) == 1 and record.attempts[0].startswith("small: 502 upstream_error")
    assert record.cost_micros > 0  # priced at the tier that answered


def test_a_timeout_before_the_first_byte_also_falls_back(
    http: httpx.Client, upstream: MockUpstream
) -> None:
    upstream.enqueue(Delay(2.0))

    response = http.post("/chat/completions", json={"model": "auto", "messages": HELLO})

    assert response.status_code == 200
    assert response.headers["x-switchboard-route"] == "large"


def test_a_stream_falls_back_when_the_first_tier_fails_before_its_first_chunk(
    http: httpx.Client, upstream: MockUpstream, spec: SpecValidator
) -> None:
    upstream.enqueue(Status(503))
    body = {"model": "auto", "messages": HELLO, "stream": True}

    response = http.post("/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["x-switchboard-route"] == "large"
    chunks = spec.validate_sse(response.text)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == (
        "echo: where is my parcel"
    )


def test_a_stream_cut_after_it_began_does_not_fall_back(
    http: httpx.Client, upstream: MockUpstream, spec: SpecValidator
) -> None:
    upstream.enqueue(CutStream(after_chunks=2))
    body = {"model": "auto", "messages": HELLO, "stream": True}

    response = http.post("/chat/completions", json=body)

    chunks = spec.validate_sse(response.text)
    assert "error" in chunks[-1]
    assert len(upstream.history) == 1  # the client already had bytes: no second tier


def test_when_every_tier_fails_the_client_gets_the_last_error_and_the_ledger_both_attempts(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    upstream.enqueue(Status(500), Status(503, headers={"retry-after": "3"}))

    response = http.post("/chat/completions", json={"model": "auto", "messages": HELLO})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["code"] == "upstream_unavailable"
    record = ledger_record(gateway, response.headers["x-switchboard-request-id"])
    assert [a.split(":")[0] for a in record.attempts] == ["small", "large"]
    assert record.status == 503 and record.cost_micros == 0


def test_a_client_error_from_upstream_is_not_retried_on_another_tier(
    http: httpx.Client, upstream: MockUpstream
) -> None:
    upstream.enqueue(Status(400))

    response = http.post("/chat/completions", json={"model": "auto", "messages": HELLO})

    assert response.status_code == 400
    assert len(upstream.history) == 1


def test_tool_requests_never_reach_a_tier_without_tools_and_the_reason_says_so(
    http: httpx.Client, upstream: MockUpstream
) -> None:
    tool = {"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}}
    response = http.post(
        "/chat/completions",
        json={"model": "small-only", "messages": HELLO, "tools": [tool]},
    )

    assert response.status_code == 200
    assert response.headers["x-switchboard-route"] == "large"
    assert "small takes no tools" in response.headers["x-switchboard-reason"]
    assert upstream.history[-1].json is not None
    assert upstream.history[-1].json["model"] == "gpt-4o"


def test_a_prompt_beyond_the_small_context_window_goes_large(
    http: httpx.Client, upstream: MockUpstream
) -> None:
    long_text = "please check my order status " * 80  # ~400 tokens > the 300 configured
    response = http.post(
        "/chat/completions",
        json={"model": "small-only", "messages": [{"role": "user", "content": long_text}]},
    )

    assert response.status_code == 200
    assert response.headers["x-switchboard-route"] == "large"
    assert "small context window 300 <" in response.headers["x-switchboard-reason"]
