"""The small-first cascade through a real gateway, with both tiers on the mock upstream.

The small tier's answer is kept when it looks sure and replaced by the large tier's when it
hedges; streams are judged within a bounded buffer. The real SmolLM2 model's own verdicts are
in tests/api/test_cascade_smollm2.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.ledger import LedgerRecord
from tests.conftest import all_records, ledger_record
from tests.support.gateway_server import (
    ACME_KEY,
    ADMIN_KEY,
    GLOBEX_KEY,
    TEST_CONFIG,
    GatewayServer,
    gateway_env,
)
from tests.support.mock_upstream import CutStream, MockUpstream, Reply, Status

INITECH_KEY = "sk-test-initech-0123456789"
HOOLI_KEY = "sk-test-hooli-0123456789"
PHONE = "13812345678"

CASCADE_CONFIG = (
    TEST_CONFIG.replace(
        # The small tier runs "on our own hardware" (local: true), so a masking tenant may send it
        # raw text, while the large tier gets placeholders.
        "upstreams:\n",
        "upstreams:\n  mocklocal:\n    base_url: ${MOCK_BASE_URL}\n"
        "    api_key_env: MOCK_UPSTREAM_KEY\n    local: true\n",
    )
    .replace("  small:\n    upstream: mock\n", "  small:\n    upstream: mocklocal\n")
    .replace(
        "    store_request_text: true\n",
        "    store_request_text: true\n"
        "    safety:\n"
        "      masking: { enabled: true }\n"
        "      cascade: { enabled: true, threshold: 0.5 }\n",
    )
    .replace(
        "    allow_pin: false\n",
        "    allow_pin: false\n"
        "    safety:\n"
        "      cascade: { enabled: true, stream_buffer_tokens: 4 }\n"
        "  initech:\n"
        "    keys: [{ env: INITECH_KEY }]\n"
        "    safety:\n"
        "      cascade: { enabled: true, stream: 'off' }\n"
        # A budget, and no fallbacks in this config: the reservation covers the small tier only.
        "  hooli:\n"
        "    keys: [{ env: HOOLI_KEY }]\n"
        "    budget: { daily_limit: 100 }\n"
        "    safety:\n"
        "      cascade: { enabled: true }\n",
    )
)

SURE = "Your parcel left our warehouse today and arrives on Friday."
UNSURE = "I'm not sure, but it might arrive at some point next week."
LARGE = "Your parcel is with the courier and arrives tomorrow before noon."
QUESTION = [{"role": "user", "content": "When will my parcel arrive?"}]


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    data_dir = tmp_path_factory.mktemp("cascade-data")
    env = gateway_env(mock_upstream.base_url, INITECH_KEY=INITECH_KEY, HOOLI_KEY=HOOLI_KEY)
    with GatewayServer(data_dir, env, CASCADE_CONFIG) as server:
        yield server


def client_for(gateway: GatewayServer, key: str = ACME_KEY) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.base_url, api_key=key, max_retries=0, _strict_response_validation=True
    )


def ask(gateway: GatewayServer, key: str = ACME_KEY, **kwargs: Any) -> Any:
    with client_for(gateway, key) as client:
        return client.chat.completions.with_raw_response.create(
            model="auto", messages=kwargs.pop("messages", QUESTION), **kwargs
        )


def streamed(gateway: GatewayServer, key: str = ACME_KEY, **kwargs: Any) -> tuple[Any, str]:
    """The raw response's headers and the text the client assembled from the stream."""
    with client_for(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=QUESTION, stream=True, **kwargs
        )
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return raw.headers, text


def price(gateway: GatewayServer, model: str, prompt: int, completion: int) -> int:
    from gateway.usage import Usage

    return gateway.switchboard.runtime.prices.cost_micros(
        model, Usage(prompt_tokens=prompt, completion_tokens=completion)
    )


def test_a_sure_small_answer_is_kept_and_its_logprobs_stay_with_the_gateway(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(SURE))

    raw = ask(gateway)
    completion = raw.parse()

    assert completion.choices[0].message.content == SURE
    assert completion.choices[0].logprobs is None  # the client did not ask for them
    assert raw.headers["x-switchboard-route"] == "small"
    assert raw.headers["x-switchboard-cascade"] == "kept"
    assert float(raw.headers["x-switchboard-confidence"]) >= 0.5
    assert "cascade: kept" in raw.headers["x-switchboard-reason"]
    [call] = upstream.history
    assert call.json["model"] == "mock-small" and call.json["logprobs"] is True
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.cascade, record.attempts) == ("small", "kept", ())


def test_an_unsure_small_answer_is_replaced_by_the_large_tiers(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(
        Reply(UNSURE, prompt_tokens=20, completion_tokens=15),
        Reply(LARGE, prompt_tokens=20, completion_tokens=12),
    )

    raw = ask(gateway)
    completion = raw.parse()

    assert completion.choices[0].message.content == LARGE
    assert raw.headers["x-switchboard-route"] == "large"
    assert raw.headers["x-switchboard-model"] == "gpt-4o"
    assert raw.headers["x-switchboard-cascade"] == "escalated"
    assert float(raw.headers["x-switchboard-confidence"]) < 0.5
    assert "cascade: escalated" in raw.headers["x-switchboard-reason"]
    assert "hedges" in raw.headers["x-switchboard-reason"]
    small_call, large_call = upstream.history
    assert (small_call.json["model"], large_call.json["model"]) == ("mock-small", "gpt-4o")
    assert "logprobs" not in large_call.json
    # Both calls are billed: the discarded small answer and the large one.
    small_cost = price(gateway, "mock-small", 20, 15)
    large_cost = price(gateway, "gpt-4o", 20, 12)
    assert small_cost > 0 and large_cost > 0
    assert raw.headers["x-switchboard-cost-usd"] == f"{(small_cost + large_cost) / 1e6:.6f}"
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.model, record.cascade) == ("large", "gpt-4o", "escalated")
    assert record.cost_micros == small_cost + large_cost
    assert (record.prompt_tokens, record.completion_tokens) == (20, 12)
    assert record.large_cost_micros == large_cost
    [attempt] = record.attempts
    assert attempt.startswith("small: discarded by the cascade, confidence 0.")
    assert "20+15 tokens" in attempt
    assert any(r.startswith("cascade: escalated") for r in record.reasons)


def test_when_the_large_tier_fails_the_unsure_small_answer_is_sent_after_all(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(UNSURE), Status(503))

    raw = ask(gateway)

    assert raw.parse().choices[0].message.content == UNSURE
    assert raw.headers["x-switchboard-route"] == "small"
    assert raw.headers["x-switchboard-model"] == "mock-small"
    assert raw.headers["x-switchboard-cascade"] == "kept"
    assert "tier failed" in raw.headers["x-switchboard-reason"]
    record = ledger_record(gateway, raw.headers["x-switchboard-request-id"])
    assert (record.route, record.cascade, record.status) == ("small", "kept", 200)
    assert record.attempts[1].startswith("large: 503")
    # Only the small answer, which the client got, is billed.
    assert record.cost_micros == price(
        gateway, "mock-small", record.prompt_tokens, record.completion_tokens
    )


def test_the_large_tier_gets_placeholders_while_the_local_small_tier_saw_the_number(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply("I don't know your number."), Reply("We will call [PHONE_1] today."))

    raw = ask(gateway, messages=[{"role": "user", "content": f"Call me on {PHONE} please"}])

    assert raw.parse().choices[0].message.content == f"We will call {PHONE} today."
    assert raw.headers["x-switchboard-cascade"] == "escalated"
    assert raw.headers["x-switchboard-masked"] == "PHONE=1"
    small_call, large_call = upstream.history
    assert PHONE in str(small_call.json["messages"])  # exempt: it never left the machine
    assert PHONE not in str(large_call.json) and "[PHONE_1]" in str(large_call.json)


def test_a_sure_streamed_answer_is_judged_in_the_buffer_and_sent_whole(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(SURE))

    headers, text = streamed(gateway, stream_options={"include_usage": True})

    assert text == SURE
    assert headers["x-switchboard-cascade"] == "kept"
    assert headers["x-switchboard-route"] == "small"
    assert len(upstream.history) == 1
    record = ledger_record(gateway, headers["x-switchboard-request-id"])
    assert (record.cascade, record.stream, record.usage_estimated) == ("kept", True, False)


def test_an_unsure_streamed_answer_never_reaches_the_client(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(UNSURE), Reply(LARGE))

    headers, text = streamed(gateway)

    assert text == LARGE  # not one word of the small answer
    assert headers["x-switchboard-cascade"] == "escalated"
    assert headers["x-switchboard-route"] == "large"
    record = ledger_record(gateway, headers["x-switchboard-request-id"])
    assert (record.route, record.cascade) == ("large", "escalated")
    small_usage = upstream.usage_for(upstream.history[0].json, UNSURE)
    large_usage = upstream.usage_for(upstream.history[1].json, LARGE)
    assert record.cost_micros == price(gateway, "mock-small", *small_usage) + price(
        gateway, "gpt-4o", *large_usage
    )


def test_a_stream_longer_than_the_buffer_is_sent_unjudged(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # globex buffers 4 tokens: this hedging answer is past the bound before it ends.
    upstream.enqueue(Reply(UNSURE))

    headers, text = streamed(gateway, key=GLOBEX_KEY)

    assert text == UNSURE
    assert headers["x-switchboard-cascade"] == "unjudged"
    assert "x-switchboard-confidence" not in headers
    assert "4-token buffer" in headers["x-switchboard-reason"]
    assert len(upstream.history) == 1
    record = ledger_record(gateway, headers["x-switchboard-request-id"])
    assert (record.route, record.cascade) == ("small", "unjudged")


def test_streams_skip_the_cascade_when_its_stream_mode_is_off(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(UNSURE), Reply(UNSURE), Reply(LARGE))

    headers, text = streamed(gateway, key=INITECH_KEY)
    raw = ask(gateway, key=INITECH_KEY)

    assert text == UNSURE and "x-switchboard-cascade" not in headers
    assert raw.headers["x-switchboard-cascade"] == "escalated"  # non-stream: still cascaded
    record = ledger_record(gateway, headers["x-switchboard-request-id"])
    assert record.cascade is None


def test_an_unsure_answer_is_kept_when_the_budget_did_not_reserve_the_large_tier(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(UNSURE))

    raw = ask(gateway, key=HOOLI_KEY)

    assert raw.parse().choices[0].message.content == UNSURE
    assert raw.headers["x-switchboard-cascade"] == "kept"
    assert float(raw.headers["x-switchboard-confidence"]) < 0.5
    assert "reservation does not cover the large tier" in raw.headers["x-switchboard-reason"]
    assert len(upstream.history) == 1


def test_the_spend_report_counts_kept_and_escalated_answers_and_their_savings(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(SURE), Reply(UNSURE), Reply(LARGE))
    ask(gateway)
    ask(gateway)
    acme: list[LedgerRecord] = [r for r in all_records(gateway) if r.tenant == "acme"]

    response = httpx.get(
        gateway.root_url + "/admin/reports/spend",
        params={"tenant": "acme", "group_by": "tier"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )

    assert response.status_code == 200, response.text
    cascade = response.json()["cascade"]
    for outcome in ("kept", "escalated", "unjudged"):
        mine = [r for r in acme if r.cascade == outcome]
        figures = cascade["outcomes"][outcome]
        assert figures["requests"] == len(mine)
        assert figures["cost_micros"] == sum(r.cost_micros for r in mine)
        assert figures["savings_micros"] == sum(r.savings_micros for r in mine)
    kept = cascade["outcomes"]["kept"]["requests"]
    escalated = cascade["outcomes"]["escalated"]["requests"]
    assert kept >= 1 and escalated >= 1
    assert cascade["escalated_share"] == round(escalated / (kept + escalated), 4)
    assert cascade["savings_micros"] == sum(r.savings_micros for r in acme if r.cascade)
    # An escalation saved nothing: it cost the discarded small answer on top.
    assert cascade["outcomes"]["escalated"]["savings_micros"] < 0


def test_metrics_count_outcomes_and_a_discarded_answer_is_no_fallback(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    def page() -> str:
        return httpx.get(gateway.root_url + "/metrics").text

    def escalations(text: str) -> float:
        return _sample(text, 'switchboard_cascade_total{outcome="escalated",tenant="acme"}')

    before = page()
    upstream.enqueue(Reply(UNSURE), Reply(LARGE))
    ask(gateway)
    after = page()

    assert escalations(after) == escalations(before) + 1
    # The discarded small answer is not a failure of the small tier (the earlier test's 503 of
    # the large tier is one, and counted).
    assert _sample(after, 'switchboard_fallbacks_total{from_route="small",tenant="acme"}') == 0


def _sample(text: str, series: str) -> float:
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if _same_series(name, series):
            return float(value)
    return 0.0


def _same_series(name: str, series: str) -> bool:
    """Prometheus label order is not fixed: compare the metric name and the label set."""

    def parts(s: str) -> tuple[str, frozenset[str]]:
        metric, _, labels = s.partition("{")
        return metric, frozenset(labels.rstrip("}").split(","))

    return parts(name) == parts(series)


def test_route_explain_says_when_the_cascade_would_judge_the_answer(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    def explain(key: str, text: str, **extra: Any) -> Any:
        response = httpx.post(
            gateway.base_url + "/route/explain",
            json={"model": "auto", "messages": [{"role": "user", "content": text}], **extra},
            headers={"authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    small = explain(ACME_KEY, "When will my parcel arrive?")
    streamed = explain(GLOBEX_KEY, "When will my parcel arrive?", stream=True)
    large = explain(ACME_KEY, "I want a refund")  # the `sensitive` rule: large, no cascade
    off = explain(INITECH_KEY, "When will my parcel arrive?", stream=True)

    assert small["route"] == "small"
    assert small["cascade"] == {
        "threshold": 0.5,
        "escalates_to": "large",
        "stream_buffer_tokens": None,
    }
    assert streamed["cascade"]["stream_buffer_tokens"] == 4
    assert (large["route"], large["cascade"]) == ("large", None)
    assert off["cascade"] is None  # initech: stream off
    assert upstream.history == []


def test_a_browser_client_may_read_the_cascade_headers(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(SURE))

    response = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "auto", "messages": QUESTION},
        headers={"authorization": f"Bearer {ACME_KEY}", "origin": "https://shop.example"},
    )

    assert response.headers["x-switchboard-cascade"] == "kept"
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-switchboard-cascade" in exposed and "x-switchboard-confidence" in exposed


def test_a_request_pinned_to_the_small_tier_is_not_second_guessed(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply(UNSURE))

    with client_for(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="small-only", messages=QUESTION
        )

    assert raw.parse().choices[0].message.content == UNSURE
    assert raw.headers["x-switchboard-route"] == "small"
    assert "x-switchboard-cascade" not in raw.headers
    assert len(upstream.history) == 1


def test_a_small_stream_failing_inside_the_buffer_gets_a_real_status(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # Nothing was sent yet: the failure is answered as one before the first byte (no fallbacks
    # in this config), not as a torn 200 stream.
    upstream.enqueue(CutStream(after_chunks=2))

    response = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "auto", "messages": QUESTION, "stream": True},
        headers={"authorization": f"Bearer {ACME_KEY}"},
    )

    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["type"] == "upstream_error"
    record = ledger_record(gateway, response.headers["x-switchboard-request-id"])
    assert (record.status, record.route, record.cascade) == (502, "small", None)
    assert record.attempts[0].startswith("small: 502")
