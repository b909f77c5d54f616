"""The cascade with the real SmolLM2-135M as the small tier (in-process llama.cpp, its own token
log-probabilities) and the mock upstream as the large tier, through the HTTP API with the
official openai client: an easy prompt it keeps, a hard one it escalates, streamed and not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, TEST_CONFIG, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream, Reply

CONFIG = (
    TEST_CONFIG.replace(
        """  small:
    upstream: mock
    model: mock-small
    price: { input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }
    max_output_tokens: 256
""",
        """  small:
    upstream: local
    model: smollm2-135m-instruct
    max_output_tokens: 48
""",
    )
    .replace(
        "upstreams:\n",
        "upstreams:\n  local:\n    kind: llama_cpp\n    threads: 1\n    context_tokens: 1024\n",
    )
    .replace(
        "    store_request_text: true\n",
        "    store_request_text: true\n    safety:\n      cascade: { enabled: true }\n",
    )
)

# The same prompts as tests/safety/test_confidence.py's direct verdicts: greedy decoding makes
# the answers, and so the verdicts, the same every run.
EASY = "Reply with one word: what colour is the sky on a clear day?"
HARD = "Translate into Finnish: 'The warranty does not cover water damage caused by misuse.'"
LARGE = "Takuu ei kata väärinkäytöstä johtuvia vesivahinkoja."


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    assert "kind: llama_cpp" in CONFIG and "mock-small" not in CONFIG
    assert "cascade: { enabled: true }" in CONFIG
    data_dir = tmp_path_factory.mktemp("cascade-smollm2")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), CONFIG) as server:
        yield server


@pytest.fixture
def client(gateway: GatewayServer, upstream: MockUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.base_url, api_key=ACME_KEY, max_retries=0, _strict_response_validation=True
    ) as c:
        yield c


def params(prompt: str) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 48,
        "temperature": 0,
    }


def test_smollm2_keeps_an_easy_answer(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    raw = client.chat.completions.with_raw_response.create(**params(EASY))
    completion = raw.parse()

    assert raw.headers["x-switchboard-cascade"] == "kept", raw.headers["x-switchboard-reason"]
    assert raw.headers["x-switchboard-route"] == "small"
    assert float(raw.headers["x-switchboard-confidence"]) >= 0.5
    assert "blue" in (completion.choices[0].message.content or "").lower()
    assert upstream.history == []  # the large tier was never asked
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.cascade, record.cost_micros) == ("small", "kept", 0)


def test_smollm2_escalates_a_hard_answer_to_the_large_tier(
    client: openai.OpenAI, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    upstream.enqueue(Reply(LARGE, prompt_tokens=30, completion_tokens=20))

    raw = client.chat.completions.with_raw_response.create(**params(HARD))

    assert raw.headers["x-switchboard-cascade"] == "escalated"
    assert float(raw.headers["x-switchboard-confidence"]) < 0.5
    assert raw.headers["x-switchboard-route"] == "large"
    assert raw.parse().choices[0].message.content == LARGE
    [call] = upstream.history
    assert call.json["model"] == "gpt-4o" and call.json["messages"][-1]["content"] == HARD
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.cascade) == ("large", "escalated")
    [attempt] = record.attempts
    # The local model costs nothing, so the request costs what the large tier did.
    assert attempt.startswith("small: discarded by the cascade") and "$0.000000" in attempt
    assert record.cost_micros == record.large_cost_micros > 0


def test_smollm2_streams_through_the_buffer_kept_and_escalated(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(LARGE))

    def stream(prompt: str) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            **params(prompt), stream=True, stream_options={"include_usage": True}
        )
        chunks = list(raw.parse())
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return raw.headers["x-switchboard-cascade"], text

    easy = stream(EASY)
    hard = stream(HARD)

    assert easy[0] == "kept" and "blue" in easy[1].lower()
    assert hard == ("escalated", LARGE)
    assert len(upstream.history) == 1
