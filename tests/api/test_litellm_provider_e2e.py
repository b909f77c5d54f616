"""A large tier on a provider that is not OpenAI-compatible (Anthropic through litellm), end to
end: the bot still speaks OpenAI to the gateway, and the provider edge is mocked with respx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import respx

from gateway.tiers.litellm_provider import load_litellm
from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, TEST_CONFIG, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

ANTHROPIC_CONFIG = TEST_CONFIG.replace(
    """  large:
    upstream: mock
    model: gpt-4o
""",
    """  large:
    upstream: anthropic
    model: anthropic/claude-haiku-4-5-20251001
""",
).replace(
    "upstreams:\n",
    "upstreams:\n  anthropic:\n    kind: litellm\n    api_key_env: ANTHROPIC_TEST_KEY\n",
)

ANSWER: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Your refund is on its way."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 30, "output_tokens": 8},
}


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    assert "kind: litellm" in ANTHROPIC_CONFIG and "model: gpt-4o\n" not in ANTHROPIC_CONFIG
    env = gateway_env(mock_upstream.base_url, ANTHROPIC_TEST_KEY="sk-ant-e2e")
    data_dir = tmp_path_factory.mktemp("litellm-data")
    with GatewayServer(data_dir, env, ANTHROPIC_CONFIG) as server:
        yield server


@pytest.fixture
def anthropic(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.Router]:
    litellm = load_litellm()
    monkeypatch.setenv("DISABLE_AIOHTTP_TRANSPORT", "True")
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", True)
    litellm.in_memory_llm_clients_cache.flush_cache()
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()  # the bot's own calls to the gateway
        yield router
    litellm.in_memory_llm_clients_cache.flush_cache()


def test_a_bot_reaches_anthropic_through_the_gateway_with_the_openai_client(
    gateway: GatewayServer, upstream: MockUpstream, anthropic: respx.Router
) -> None:
    route = anthropic.post("https://api.anthropic.com/v1/messages").mock(
        return_value=httpx.Response(200, json=ANSWER)
    )
    with openai.OpenAI(base_url=gateway.base_url, api_key=ACME_KEY, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o",  # pinned to the large tier by the config's alias
            messages=[{"role": "user", "content": "I want a refund"}],
        )
    completion = raw.parse()

    assert completion.choices[0].message.content == "Your refund is on its way."
    assert raw.headers["x-switchboard-route"] == "large"
    sent = json.loads(route.calls.last.request.content)
    assert sent["messages"][0]["content"][0]["text"] == "I want a refund" or (
        sent["messages"][0]["content"] == "I want a refund"
    )
    assert route.calls.last.request.headers["x-api-key"] == "sk-ant-e2e"
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.prompt_tokens, record.completion_tokens) == (30, 8)
    assert record.cost_micros > 0 and record.model == "claude-haiku-4-5-20251001"


def test_an_anthropic_outage_falls_to_an_openai_error_body(
    gateway: GatewayServer, upstream: MockUpstream, anthropic: respx.Router
) -> None:
    anthropic.post("https://api.anthropic.com/v1/messages").mock(
        return_value=httpx.Response(
            529, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
        )
    )
    with openai.OpenAI(base_url=gateway.base_url, api_key=ACME_KEY, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
            )
    assert info.value.status_code == 503
    assert info.value.body is not None
