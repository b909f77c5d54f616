"""The exact cache end to end: a repeated request is answered free from the cache, streamed or
not, per tenant, with the per-request opt-outs, and recorded in the ledger at cost 0."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import ledger_record
from tests.support.gateway_server import (
    ACME_KEY,
    GLOBEX_KEY,
    TEST_CONFIG,
    GatewayServer,
    gateway_env,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.openai_spec import SpecValidator

CACHED_CONFIG = TEST_CONFIG.replace(
    "cache:\n  enabled: false\n", "cache:\n  enabled: true\n  admit_after: 1\n"
)


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    assert CACHED_CONFIG != TEST_CONFIG
    data_dir = tmp_path_factory.mktemp("cache-data")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), CACHED_CONFIG) as server:
        yield server


def ask(
    gateway: GatewayServer, text: str, *, key: str = ACME_KEY, **extra: object
) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
    )


def test_a_repeated_request_is_answered_from_the_cache_at_cost_zero(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    first = ask(gateway, "how do I return shoes")
    second = ask(gateway, "how do I return shoes")

    assert len(upstream.history) == 1
    assert first.headers["x-switchboard-cache"] == "miss"
    assert second.headers["x-switchboard-route"] == "cache"
    assert second.headers["x-switchboard-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["id"] != first.json()["id"]
    hit = ledger_record(gateway, second.headers["x-switchboard-request-id"])
    miss = ledger_record(gateway, first.headers["x-switchboard-request-id"])
    assert (hit.route, hit.cache_hit, hit.cost_micros) == ("cache", True, 0)
    assert hit.prompt_tokens == miss.prompt_tokens
    assert hit.large_cost_micros == miss.large_cost_micros > 0  # the saving is the whole baseline
    assert second.headers["x-switchboard-cost-usd"] == "0.000000"


def test_a_cached_answer_is_replayed_as_sse_to_a_streaming_request(
    gateway: GatewayServer, upstream: MockUpstream, spec: SpecValidator
) -> None:
    ask(gateway, "when do you ship")
    streamed = ask(gateway, "when do you ship", stream=True, stream_options={"include_usage": True})

    assert len(upstream.history) == 1
    assert streamed.headers["x-switchboard-route"] == "cache"
    chunks = spec.validate_sse(streamed.text)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: when do you ship"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_the_cache_never_crosses_tenants(gateway: GatewayServer, upstream: MockUpstream) -> None:
    ask(gateway, "what are your opening hours")
    other = ask(gateway, "what are your opening hours", key=GLOBEX_KEY)

    assert other.headers["x-switchboard-cache"] == "miss"
    assert len(upstream.history) == 2


def test_no_cache_and_no_store_headers_opt_out_per_request(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    url = gateway.base_url + "/chat/completions"
    body = {"model": "auto", "messages": [{"role": "user", "content": "do you gift wrap"}]}
    auth = {"authorization": f"Bearer {ACME_KEY}"}

    not_stored = httpx.post(url, json=body, headers={**auth, "x-switchboard-cache": "no-store"})
    after = httpx.post(url, json=body, headers=auth)
    fresh = httpx.post(url, json=body, headers={**auth, "x-switchboard-cache": "no-cache"})

    assert not_stored.headers["x-switchboard-cache"] == "miss"
    assert after.headers["x-switchboard-cache"] == "miss"  # the first answer was not stored
    assert fresh.headers["x-switchboard-route"] == "small"  # stored by `after`, but not served
    assert len(upstream.history) == 3


def test_a_request_about_one_order_is_not_cached(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    ask(gateway, "where is order 123456789")
    again = ask(gateway, "where is order 123456789")

    assert again.headers["x-switchboard-cache"] != "hit"
    assert len(upstream.history) == 2


def test_by_default_an_answer_is_stored_only_once_its_request_comes_back(
    mock_upstream: MockUpstream, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = TEST_CONFIG.replace("cache:\n  enabled: false\n", "cache:\n  enabled: true\n")
    data_dir = tmp_path_factory.mktemp("admit-data")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), config) as server:
        answers = [ask(server, "can I change my delivery address") for _ in range(3)]

    assert [a.headers["x-switchboard-cache"] for a in answers] == ["miss", "miss", "hit"]
    assert len(upstream.history) == 2


def test_admit_after_three_stores_on_the_third_miss(
    mock_upstream: MockUpstream, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = TEST_CONFIG.replace(
        "cache:\n  enabled: false\n", "cache:\n  enabled: true\n  admit_after: 3\n"
    )
    data_dir = tmp_path_factory.mktemp("admit3-data")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), config) as server:
        answers = [ask(server, "is there a student discount") for _ in range(4)]

    assert [a.headers["x-switchboard-cache"] for a in answers] == ["miss", "miss", "miss", "hit"]


def test_with_state_redis_two_gateways_share_one_cache(
    mock_upstream: MockUpstream, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    prefix = f"switchboard-test-{uuid.uuid4().hex[:8]}:"
    config = TEST_CONFIG.replace(
        "cache:\n  enabled: false\n",
        "cache:\n  enabled: true\n  admit_after: 1\n"
        f'state: redis\nredis:\n  url: redis://127.0.0.1:6379/15\n  key_prefix: "{prefix}"\n',
    )
    env = gateway_env(mock_upstream.base_url)
    try:
        with (
            GatewayServer(tmp_path_factory.mktemp("redis-a"), env, config) as first,
            GatewayServer(tmp_path_factory.mktemp("redis-b"), env, config) as second,
        ):
            stored = ask(first, "do you ship to Canada")
            served = ask(second, "do you ship to Canada")
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()

    assert stored.headers["x-switchboard-cache"] == "miss"
    assert served.headers["x-switchboard-cache"] == "hit"
    assert len(upstream.history) == 1
