"""The real SmolLM2-135M through the whole gateway, driven by the official openai client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, TEST_CONFIG, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream

LOCAL_CONFIG = TEST_CONFIG.replace(
    """  small:
    upstream: mock
    model: mock-small
    price: { input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }
    max_output_tokens: 256
""",
    """  small:
    upstream: local
    model: smollm2-135m-instruct
    max_output_tokens: 12
""",
).replace(
    "upstreams:\n",
    "upstreams:\n  local:\n    kind: llama_cpp\n    threads: 1\n    context_tokens: 1024\n",
)


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    assert "kind: llama_cpp" in LOCAL_CONFIG and "mock-small" not in LOCAL_CONFIG
    data_dir = tmp_path_factory.mktemp("local-data")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), LOCAL_CONFIG) as server:
        yield server


@pytest.fixture
def local_client(gateway: GatewayServer, upstream: MockUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.base_url, api_key=ACME_KEY, max_retries=0, _strict_response_validation=True
    ) as c:
        yield c


HELLO = [{"role": "user", "content": "Say hello to a customer."}]


def test_smollm2_answers_in_process_for_free(
    local_client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    raw = local_client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    completion = raw.parse()

    assert raw.headers["x-switchboard-route"] == "small"
    assert raw.headers["x-switchboard-model"] == "smollm2-135m-instruct"
    assert completion.choices[0].message.content  # some text
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 12
    assert upstream.history == []  # nothing left the process
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.cost_micros, record.status) == ("small", 0, 200)
    assert record.large_cost_micros > 0  # what gpt-4o would have cost: the saving


def test_smollm2_streams(local_client: openai.OpenAI) -> None:
    chunks = list(
        local_client.chat.completions.create(
            model="auto", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_tool_requests_go_to_the_large_tier_never_to_smollm2(
    local_client: openai.OpenAI, upstream: MockUpstream
) -> None:
    tool = {"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}}
    raw = local_client.chat.completions.with_raw_response.create(
        model="auto",
        messages=HELLO,
        tools=[tool],  # type: ignore[list-item]
    )

    assert raw.headers["x-switchboard-route"] == "large"
    assert "small takes no tools" in raw.headers["x-switchboard-reason"]
    assert upstream.history[-1].json is not None
    assert upstream.history[-1].json["model"] == "gpt-4o"
