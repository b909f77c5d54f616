"""Upstream faults the API suite (tests/api/test_upstream_faults.py, test_fallbacks.py) leaves
out: a stream that trickles slower in total than the read timeout, and a 429 with
``retry-after`` that a fallback tier absorbs or, when every tier refuses, reaches the client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway.ledger import LedgerQuery
from tests.support.gateway_server import ACME_KEY, TEST_CONFIG, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream, Status

FALLBACKS = TEST_CONFIG.replace(
    "  fallbacks: {}\n", "  fallbacks: { small: [large], large: [small] }\n"
)


@pytest.fixture
def trickle() -> Iterator[MockUpstream]:
    # 0.3 s between chunks: about 14 chunks take over 4 s, four times the read timeout below.
    with MockUpstream(chunk_delay=0.3) as upstream:
        yield upstream


def test_a_slow_trickle_slower_in_total_than_the_read_timeout_still_streams_whole(
    trickle: MockUpstream, tmp_path: Path
) -> None:
    # read_timeout_s bounds each wait for bytes, never the whole answer: a long answer that
    # keeps coming is not cut.
    env = gateway_env(trickle.base_url, MOCK_READ_TIMEOUT="1")
    text = "one two three four five six seven eight nine ten eleven twelve"
    with GatewayServer(tmp_path, env) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=ACME_KEY, max_retries=0, timeout=60)
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": text}], stream=True
        )
        chunks = list(stream)
        records = list(gw.switchboard.runtime.ledger.records(LedgerQuery(tenant="acme")))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        f"echo: {text}"
    )
    assert len(chunks) >= 10  # it really came piece by piece
    assert [(r.status, r.stream, r.usage_estimated) for r in records] == [(200, True, False)]


def test_a_429_on_the_small_tier_falls_back_to_large_and_the_ledger_keeps_the_attempt(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    upstream.enqueue(Status(429, headers={"retry-after": "7"}))
    with GatewayServer(tmp_path, gateway_env(upstream.base_url), FALLBACKS) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=ACME_KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello"}]
        )
        records = list(gw.switchboard.runtime.ledger.records(LedgerQuery(tenant="acme")))
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert raw.headers["x-switchboard-fallback"] == "small -> large"
    assert [r.json["model"] for r in upstream.history if r.json] == ["mock-small", "gpt-4o"]
    [record] = records
    assert (record.status, record.route) == (200, "large")
    assert record.attempts[0].startswith("small: 429")


def test_when_every_tier_answers_429_the_client_gets_429_with_the_last_retry_after(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    upstream.enqueue(
        Status(429, headers={"retry-after": "7"}), Status(429, headers={"retry-after": "11"})
    )
    with GatewayServer(tmp_path, gateway_env(upstream.base_url), FALLBACKS) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=ACME_KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello"}]
            )
        records = list(gw.switchboard.runtime.ledger.records(LedgerQuery(tenant="acme")))
    assert caught.value.response.headers["retry-after"] == "11"
    assert caught.value.code == "rate_limit_exceeded"
    [record] = records
    assert record.status == 429 and len(record.attempts) == 2
