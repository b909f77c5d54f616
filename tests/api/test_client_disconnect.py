"""A bot that hangs up mid-stream is billed for what was generated, and frees its upstream slot.

The upstream here streams one chunk every 50 ms, so a 100-word answer takes about 5 s: the client
leaves long before the end. The upstream allows one connection per tier, so a connection the
gateway failed to release would block the next request instead of passing unnoticed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.ledger import LedgerQuery, LedgerRecord
from tests.support.gateway_server import ACME_KEY, TEST_CONFIG, UPSTREAM_KEY, GatewayServer
from tests.support.gateway_server import gateway_env as gateway_env
from tests.support.mock_upstream import Delay, MockUpstream, Reply

HELLO = [{"role": "user", "content": "where is my parcel"}]
ACME = {"authorization": f"Bearer {ACME_KEY}"}
REQUEST_ID = "x-switchboard-request-id"
CLIENT_CLOSED = 499
LONG_ANSWER = " ".join(f"word{i}" for i in range(100))
CHUNK_DELAY_S = 0.05
ONE_CONNECTION = TEST_CONFIG.replace(
    "    read_timeout_s: ${MOCK_READ_TIMEOUT:-5}\n",
    "    read_timeout_s: ${MOCK_READ_TIMEOUT:-5}\n    max_connections: 1\n",
)
assert ONE_CONNECTION != TEST_CONFIG


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[MockUpstream]:
    with MockUpstream(
        api_key=UPSTREAM_KEY, chunk_delay=CHUNK_DELAY_S, models=("mock-small", "gpt-4o")
    ) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def slow_gateway(
    slow_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    env = gateway_env(slow_upstream.base_url, MOCK_READ_TIMEOUT="2")
    with GatewayServer(tmp_path_factory.mktemp("disconnect"), env, ONE_CONNECTION) as server:
        yield server


@pytest.fixture
def http(slow_gateway: GatewayServer, slow_upstream: MockUpstream) -> Iterator[httpx.Client]:
    slow_upstream.reset()
    with httpx.Client(base_url=slow_gateway.base_url, headers=ACME, timeout=3) as c:
        yield c
    slow_upstream.reset()


def wait_for_record(server: GatewayServer, request_id: str, timeout_s: float = 5.0) -> LedgerRecord:
    """The request's ledger record, once the gateway has finished accounting for it."""
    ledger = server.switchboard.runtime.ledger
    deadline = time.monotonic() + timeout_s
    while True:
        ledger.flush()
        found = [r for r in ledger.records(LedgerQuery()) if r.request_id == request_id]
        if found:
            assert len(found) == 1
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no ledger record for {request_id} after {timeout_s} s")
        time.sleep(0.05)


def read_then_hang_up(http: httpx.Client, body: dict[str, Any], events: int) -> str:
    """Stream ``body``, read ``events`` data events, close the connection; the request id."""
    with http.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        request_id = response.headers[REQUEST_ID]
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                assert line != "data: [DONE]", "the stream ended before the client left"
                seen += 1
                if seen == events:
                    break
    return request_id


def test_a_client_leaving_mid_stream_is_billed_for_what_was_generated(
    http: httpx.Client, slow_upstream: MockUpstream, slow_gateway: GatewayServer
) -> None:
    slow_upstream.enqueue(Reply(LONG_ANSWER))
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    started = time.monotonic()

    request_id = read_then_hang_up(http, body, events=4)
    record = wait_for_record(slow_gateway, request_id)

    # Well before the ~5 s the whole answer takes: the gateway noticed the client leaving.
    assert time.monotonic() - started < 3.0
    full = slow_gateway.switchboard.runtime.tokens.count_text(LONG_ANSWER, "gpt-4o")
    assert (record.tenant, record.route, record.model) == ("acme", "large", "gpt-4o")
    assert (record.status, record.stream, record.error_code) == (CLIENT_CLOSED, True, None)
    assert record.usage_estimated is True
    assert 0 < record.completion_tokens < full
    assert record.prompt_tokens > 0
    assert record.cost_micros > 0


def test_the_upstream_connection_is_released_after_a_client_leaves(
    http: httpx.Client, slow_upstream: MockUpstream, slow_gateway: GatewayServer
) -> None:
    slow_upstream.enqueue(Reply(LONG_ANSWER))
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    request_id = read_then_hang_up(http, body, events=2)
    wait_for_record(slow_gateway, request_id)

    # The large tier has a single upstream connection: this waits forever if it leaked.
    after = http.post("/chat/completions", json={"model": "gpt-4o", "messages": HELLO})

    assert after.status_code == 200, after.text
    assert after.json()["choices"][0]["message"]["content"] == "echo: where is my parcel"
    assert wait_for_record(slow_gateway, after.headers[REQUEST_ID]).status == 200


def test_a_following_stream_on_the_same_tier_runs_to_the_end(
    http: httpx.Client, slow_upstream: MockUpstream, slow_gateway: GatewayServer
) -> None:
    slow_upstream.enqueue(Reply(LONG_ANSWER))
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    wait_for_record(slow_gateway, read_then_hang_up(http, body, events=2))

    after = http.post("/chat/completions", json=body)

    assert after.status_code == 200
    assert after.text.endswith("data: [DONE]\n\n")
    record = wait_for_record(slow_gateway, after.headers[REQUEST_ID])
    assert (record.status, record.usage_estimated) == (200, False)


def test_a_client_giving_up_before_the_first_chunk_is_billed_only_for_the_prompt(
    slow_gateway: GatewayServer, slow_upstream: MockUpstream
) -> None:
    slow_upstream.reset()
    slow_upstream.enqueue(Delay(0.6, Reply(LONG_ANSWER)))
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    impatient = httpx.Client(base_url=slow_gateway.base_url, headers=ACME, timeout=0.2)
    ledger = slow_gateway.switchboard.runtime.ledger
    ledger.flush()
    earlier = {r.request_id for r in ledger.records(LedgerQuery())}

    with impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/chat/completions", json=body)

    # The client never saw a request id: the new record is the one that was not there before.
    deadline = time.monotonic() + 5
    while not (
        records := [r for r in ledger.records(LedgerQuery()) if r.request_id not in earlier]
    ):
        assert time.monotonic() < deadline, "the abandoned request never reached the ledger"
        time.sleep(0.05)
        ledger.flush()
    [record] = records
    assert (record.status, record.error_code, record.usage_estimated) == (CLIENT_CLOSED, None, True)
    assert record.completion_tokens == 0
    assert record.prompt_tokens > 0 and record.cost_micros > 0
