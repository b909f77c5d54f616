"""Every upstream fault reaches the bot as a clean OpenAI error, and every one is in the ledger.

The gateway here has a 0.5 s read timeout (TEST_CONFIG's ``MOCK_READ_TIMEOUT``), so timeouts and
stalls cost well under a second each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.ledger import LedgerRecord
from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, UPSTREAM_KEY, GatewayServer
from tests.support.gateway_server import gateway_env as gateway_env
from tests.support.mock_upstream import (
    Behaviour,
    CutStream,
    Delay,
    Drop,
    MalformedJson,
    MalformedSse,
    MockUpstream,
    Reply,
    StallStream,
    Status,
    closed_port_url,
)
from tests.support.openai_spec import SpecValidator

HELLO = [{"role": "user", "content": "where is my parcel"}]
ACME = {"authorization": f"Bearer {ACME_KEY}"}
REQUEST_ID = "x-switchboard-request-id"
READ_TIMEOUT_S = 0.5
SLOWER_THAN_READ_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    """Overrides conftest's gateway (and so the clients' one) with a short read timeout."""
    env = gateway_env(mock_upstream.base_url, MOCK_READ_TIMEOUT=str(READ_TIMEOUT_S))
    with GatewayServer(tmp_path_factory.mktemp("faults"), env) as server:
        yield server


@pytest.fixture(scope="module")
def refused_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway whose upstream port has nothing listening."""
    env = gateway_env(closed_port_url())
    with GatewayServer(tmp_path_factory.mktemp("refused"), env) as server:
        yield server


@pytest.fixture(scope="module")
def keyless_gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    """A gateway started without the provider key its config names (MOCK_UPSTREAM_KEY)."""
    env = gateway_env(mock_upstream.base_url)
    del env["MOCK_UPSTREAM_KEY"]
    with GatewayServer(tmp_path_factory.mktemp("keyless"), env) as server:
        yield server


@pytest.fixture
def http(gateway: GatewayServer, upstream: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, headers=ACME, timeout=10) as c:
        yield c


def chat(
    http: httpx.Client, *, model: str = "auto", stream: bool = False, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": HELLO, **extra}
    if stream:
        body["stream"] = True
    return http.post("/chat/completions", json=body)


def openai_error(
    response: httpx.Response, status: int, spec: SpecValidator, *, code: str
) -> dict[str, Any]:
    """The ``error`` object of a response that must be an OpenAI JSON error (not a stream)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    spec.validate("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert error["type"] == ("rate_limit_error" if status == 429 else "upstream_error")
    return error


def record_of(gateway: GatewayServer, response: httpx.Response) -> LedgerRecord:
    return ledger_record(gateway, response.headers[REQUEST_ID])


def tokens(gateway: GatewayServer, text: str, model: str) -> int:
    """What the gateway's own counter makes of ``text`` (what it bills when usage is missing)."""
    return gateway.switchboard.runtime.tokens.count_text(text, model)


def prompt_tokens(gateway: GatewayServer, model: str) -> int:
    return gateway.switchboard.runtime.tokens.count_messages(HELLO, model)


# --------------------------------------------------------------------------- non-stream


def test_upstream_500_is_a_502_upstream_error_recorded_in_the_ledger(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(Status(500))

    response = chat(http)

    error = openai_error(response, 502, spec, code="upstream_error")
    assert "status 500" in error["message"]
    assert "Mock upstream error 500" in error["message"]
    record = record_of(gateway, response)
    assert (record.tenant, record.route, record.model) == ("acme", "small", "mock-small")
    assert (record.status, record.error_code) == (502, "upstream_error")
    assert (record.completion_tokens, record.cost_micros) == (0, 0)


def test_upstream_503_is_a_503_with_the_upstreams_retry_after(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(Status(503, headers={"retry-after": "3"}))

    response = chat(http)

    openai_error(response, 503, spec, code="upstream_unavailable")
    assert response.headers["retry-after"] == "3"
    assert record_of(gateway, response).status == 503


def test_upstream_503_without_retry_after_still_tells_the_client_when_to_retry(
    http: httpx.Client, upstream: MockUpstream, spec: SpecValidator
) -> None:
    upstream.enqueue(Status(503))

    response = chat(http)

    openai_error(response, 503, spec, code="upstream_unavailable")
    assert response.headers["retry-after"] == "1"


def test_upstream_429_is_a_429_rate_limit_error_passing_retry_after(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(Status(429, headers={"retry-after": "2"}))

    response = chat(http)

    error = openai_error(response, 429, spec, code="rate_limit_exceeded")
    assert "rate limiting" in error["message"]
    assert response.headers["retry-after"] == "2"
    record = record_of(gateway, response)
    assert (record.status, record.error_code) == (429, "rate_limit_exceeded")


def test_upstream_slower_than_the_read_timeout_is_a_504(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(Delay(SLOWER_THAN_READ_TIMEOUT_S))

    response = chat(http)

    error = openai_error(response, 504, spec, code="upstream_timeout")
    assert "did not answer in time" in error["message"]
    assert response.elapsed.total_seconds() < SLOWER_THAN_READ_TIMEOUT_S
    record = record_of(gateway, response)
    assert (record.status, record.error_code) == (504, "upstream_timeout")


def test_a_refused_connection_is_a_503_upstream_unavailable(
    refused_gateway: GatewayServer, spec: SpecValidator
) -> None:
    with httpx.Client(base_url=refused_gateway.base_url, headers=ACME, timeout=10) as http:
        response = chat(http)

    error = openai_error(response, 503, spec, code="upstream_unavailable")
    assert "refused the connection" in error["message"]
    assert response.headers["retry-after"] == "1"
    record = record_of(refused_gateway, response)
    assert (record.tenant, record.status, record.error_code) == (
        "acme",
        503,
        "upstream_unavailable",
    )


def test_malformed_json_from_upstream_is_a_502_bad_response(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(MalformedJson())

    response = chat(http)

    error = openai_error(response, 502, spec, code="upstream_bad_response")
    assert "malformed JSON" in error["message"]
    assert record_of(gateway, response).status == 502


def test_json_nested_too_deep_from_upstream_is_a_502_bad_response(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    # A hostile or broken upstream: 100,000 nested arrays overflow the decoder's recursion limit.
    deep = "[" * 100_000 + "]" * 100_000
    upstream.enqueue(Status(200, body=deep, headers={"content-type": "application/json"}))

    response = chat(http)

    error = openai_error(response, 502, spec, code="upstream_bad_response")
    assert "malformed JSON" in error["message"]
    assert record_of(gateway, response).status == 502


@pytest.mark.parametrize(
    "fault", [Drop(), CutStream(after_chunks=1)], ids=["drop", "body-cut-halfway"]
)
def test_upstream_closing_the_connection_is_a_clean_502(
    http: httpx.Client,
    upstream: MockUpstream,
    gateway: GatewayServer,
    spec: SpecValidator,
    fault: Behaviour,
) -> None:
    upstream.enqueue(fault)

    response = chat(http)

    error = openai_error(response, 502, spec, code="upstream_error")
    assert "closed the connection early" in error["message"]
    assert record_of(gateway, response).status == 502


def test_upstream_stalling_halfway_through_the_body_is_a_504(
    http: httpx.Client, upstream: MockUpstream, spec: SpecValidator
) -> None:
    upstream.enqueue(StallStream(after_chunks=1, seconds=SLOWER_THAN_READ_TIMEOUT_S))

    openai_error(chat(http), 504, spec, code="upstream_timeout")


def test_upstream_400_is_a_400_passing_the_upstreams_message(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    refusal = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    upstream.enqueue(Status(400, body=refusal))

    response = chat(http)

    assert response.status_code == 400
    body = response.json()
    spec.validate("ErrorResponse", body)
    assert body["error"]["type"] == "invalid_request_error"
    assert "This model's maximum context length is 8192 tokens." in body["error"]["message"]
    assert record_of(gateway, response).status == 400


def test_upstream_401_is_a_502_naming_the_key_variable_never_the_key(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(Status(401))

    response = chat(http)

    error = openai_error(response, 502, spec, code="upstream_auth_failed")
    assert "MOCK_UPSTREAM_KEY" in error["message"]
    assert UPSTREAM_KEY not in response.text
    assert all(UPSTREAM_KEY not in value for value in response.headers.values())
    record = record_of(gateway, response)
    assert (record.status, record.error_code) == (502, "upstream_auth_failed")


def test_upstream_401_tells_the_openai_client_not_to_retry(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Status(401), Status(401), Status(401))

    with openai.OpenAI(base_url=gateway.base_url, api_key=ACME_KEY, max_retries=2) as retrying:
        with pytest.raises(openai.InternalServerError) as raised:
            retrying.chat.completions.create(model="auto", messages=HELLO)

    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.history) == 1


def test_a_missing_provider_key_is_a_502_naming_the_variable_without_calling_upstream(
    keyless_gateway: GatewayServer, upstream: MockUpstream, spec: SpecValidator
) -> None:
    with httpx.Client(base_url=keyless_gateway.base_url, headers=ACME, timeout=10) as http:
        response = chat(http)

    error = openai_error(response, 502, spec, code="upstream_not_configured")
    assert "set the environment variable MOCK_UPSTREAM_KEY" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert upstream.history == []
    record = record_of(keyless_gateway, response)
    assert (record.status, record.error_code) == (502, "upstream_not_configured")


# --------------------------------------------------------------------------- the openai client


@pytest.mark.parametrize(
    ("fault", "exception", "status"),
    [
        (Status(500), openai.InternalServerError, 502),
        (Status(503), openai.InternalServerError, 503),
        (Delay(SLOWER_THAN_READ_TIMEOUT_S), openai.InternalServerError, 504),
        (Status(429, headers={"retry-after": "2"}), openai.RateLimitError, 429),
        (Status(400), openai.BadRequestError, 400),
    ],
    ids=["500", "503", "timeout", "429", "400"],
)
def test_the_openai_client_raises_the_matching_exception(
    client: openai.OpenAI,
    upstream: MockUpstream,
    fault: Behaviour,
    exception: type[openai.APIStatusError],
    status: int,
) -> None:
    upstream.enqueue(fault)

    with pytest.raises(exception) as raised:
        client.chat.completions.create(model="auto", messages=HELLO)

    assert raised.value.status_code == status
    assert raised.value.response.headers.get(REQUEST_ID)


def test_the_openai_client_raises_before_streaming_when_the_upstream_fails_first(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    upstream.enqueue(Status(429, headers={"retry-after": "2"}))

    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="auto", messages=HELLO, stream=True)


# ----------------------------------------------------------------------- stream, before 1st byte

# A 200 event stream whose first event is not JSON: the fault is in the first event itself.
MALFORMED_FIRST_EVENT = Status(
    200, body="data: {not json\n\n", headers={"content-type": "text/event-stream"}
)


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Status(500), 502, "upstream_error"),
        (Status(429, headers={"retry-after": "2"}), 429, "rate_limit_exceeded"),
        (Status(503, headers={"retry-after": "4"}), 503, "upstream_unavailable"),
        (Delay(SLOWER_THAN_READ_TIMEOUT_S), 504, "upstream_timeout"),
        (Drop(), 502, "upstream_error"),
        (MALFORMED_FIRST_EVENT, 502, "upstream_bad_response"),
        (
            Status(200, body="", headers={"content-type": "text/event-stream"}),
            502,
            "upstream_stream_cut",
        ),
    ],
    ids=["500", "429", "503", "timeout", "drop", "malformed-first-event", "empty-stream"],
)
def test_a_stream_failing_before_its_first_chunk_gets_a_real_status_and_json_error(
    http: httpx.Client,
    upstream: MockUpstream,
    gateway: GatewayServer,
    spec: SpecValidator,
    fault: Behaviour,
    status: int,
    code: str,
) -> None:
    upstream.enqueue(fault)

    response = chat(http, stream=True)

    openai_error(response, status, spec, code=code)
    if status in (429, 503):
        assert response.headers["retry-after"] == {429: "2", 503: "4"}[status]
    record = record_of(gateway, response)
    assert (record.status, record.error_code, record.stream) == (status, code, True)


def test_a_stream_to_a_refused_upstream_gets_a_503_json_error(
    refused_gateway: GatewayServer, spec: SpecValidator
) -> None:
    with httpx.Client(base_url=refused_gateway.base_url, headers=ACME, timeout=10) as http:
        response = chat(http, stream=True)

    openai_error(response, 503, spec, code="upstream_unavailable")
    assert record_of(refused_gateway, response).stream is True


# ------------------------------------------------------------------------ stream, after 1st byte


def stream_after_fault(
    http: httpx.Client, upstream: MockUpstream, spec: SpecValidator, fault: Behaviour
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """Stream gpt-4o through ``fault``; the response and its spec-checked events."""
    upstream.enqueue(fault)
    response = chat(http, model="gpt-4o", stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = spec.validate_sse(response.text)
    assert response.text.endswith("data: [DONE]\n\n")
    return response, events


def streamed_text(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (CutStream(after_chunks=2), 502, "upstream_error"),
        (MalformedSse(after_chunks=2), 502, "upstream_bad_response"),
        (StallStream(after_chunks=2, seconds=SLOWER_THAN_READ_TIMEOUT_S), 504, "upstream_timeout"),
    ],
    ids=["cut", "malformed-event", "stall"],
)
def test_a_stream_failing_midway_ends_with_an_error_event_and_bills_what_was_streamed(
    http: httpx.Client,
    upstream: MockUpstream,
    gateway: GatewayServer,
    spec: SpecValidator,
    fault: Behaviour,
    status: int,
    code: str,
) -> None:
    response, events = stream_after_fault(http, upstream, spec, fault)

    *chunks, last = events
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "echo:", " where"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert set(last) == {"error"}
    assert (last["error"]["type"], last["error"]["code"]) == ("upstream_error", code)
    record = record_of(gateway, response)
    assert (record.status, record.error_code, record.route) == (status, code, "large")
    assert record.usage_estimated is True
    assert record.prompt_tokens == prompt_tokens(gateway, "gpt-4o")
    assert record.completion_tokens == tokens(gateway, "echo: where", "gpt-4o") > 0
    assert record.cost_micros > 0


def test_the_openai_client_sees_the_chunks_then_an_api_error_mid_stream(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    upstream.enqueue(CutStream(after_chunks=2))
    stream = client.chat.completions.create(model="auto", messages=HELLO, stream=True)
    received: list[str] = []

    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "echo: where"
    assert "closed the connection early" in raised.value.message


def sse_reply(*events: dict[str, Any] | str) -> Status:
    """A hand-written 200 event stream, for upstream oddities the mock has no behaviour for."""
    body = "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)
    return Status(200, body=body, headers={"content-type": "text/event-stream"})


def upstream_chunk(*choices: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": list(choices),
    }


HELLO_CHUNK = upstream_chunk({"index": 0, "delta": {"role": "assistant", "content": "Hello"}})
PROVIDER_ERROR = {"error": {"message": "The server had an error while processing your request."}}


def test_an_upstream_error_event_mid_stream_becomes_our_error_event(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    response, events = stream_after_fault(
        http, upstream, spec, sse_reply(HELLO_CHUNK, PROVIDER_ERROR, "[DONE]")
    )

    assert streamed_text(events) == "Hello"
    assert events[-1]["error"]["code"] == "upstream_error"
    assert PROVIDER_ERROR["error"]["message"] in events[-1]["error"]["message"]
    record = record_of(gateway, response)
    assert (record.status, record.completion_tokens) == (502, tokens(gateway, "Hello", "gpt-4o"))


def test_an_upstream_error_event_first_is_a_502_json_error(
    http: httpx.Client, upstream: MockUpstream, spec: SpecValidator
) -> None:
    upstream.enqueue(sse_reply(PROVIDER_ERROR, "[DONE]"))

    error = openai_error(chat(http, stream=True), 502, spec, code="upstream_error")

    assert PROVIDER_ERROR["error"]["message"] in error["message"]


def test_an_unforeseen_failure_mid_stream_still_ends_with_an_error_event_and_done(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    # A choice that is not an object: nothing maps it, so it fails inside the relay itself.
    response, events = stream_after_fault(
        http, upstream, spec, sse_reply(HELLO_CHUNK, upstream_chunk(None), "[DONE]")
    )

    assert streamed_text(events) == "Hello"
    request_id = response.headers[REQUEST_ID]
    assert events[-1]["error"] == {
        "message": f"Internal error (request id {request_id}).",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    record = record_of(gateway, response)
    assert (record.status, record.completion_tokens) == (500, tokens(gateway, "Hello", "gpt-4o"))


def test_an_unforeseen_failure_on_the_first_chunk_is_a_500_in_the_ledger(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(sse_reply(upstream_chunk(None), "[DONE]"))

    response = chat(http, stream=True)

    assert response.status_code == 500
    spec.validate("ErrorResponse", response.json())
    request_id = response.headers[REQUEST_ID]
    assert response.json()["error"]["message"] == f"Internal error (request id {request_id})."
    record = record_of(gateway, response)
    assert (record.tenant, record.status, record.stream) == ("acme", 500, True)


# --------------------------------------------------------------------------- missing usage


LONG_ANSWER = "Your parcel left the depot this morning and should arrive tomorrow before noon."


def test_a_stream_without_usage_is_billed_by_the_gateways_own_count(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    response, events = stream_after_fault(
        http, upstream, spec, Reply(LONG_ANSWER, include_usage=False)
    )

    assert streamed_text(events) == LONG_ANSWER
    record = record_of(gateway, response)
    assert (record.status, record.usage_estimated) == (200, True)
    assert record.prompt_tokens == prompt_tokens(gateway, "gpt-4o") > 0
    assert record.completion_tokens == tokens(gateway, LONG_ANSWER, "gpt-4o") > 0
    assert record.cost_micros > 0
    assert f"x-switchboard-cost-usd=0.{record.cost_micros:06d}" in response.text


def test_a_non_stream_answer_without_usage_is_billed_by_the_gateways_own_count(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    upstream.enqueue(Reply(LONG_ANSWER, include_usage=False))

    response = chat(http, model="gpt-4o")

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == LONG_ANSWER
    record = record_of(gateway, response)
    assert (record.status, record.usage_estimated) == (200, True)
    assert record.prompt_tokens == prompt_tokens(gateway, "gpt-4o") > 0
    assert record.completion_tokens == tokens(gateway, LONG_ANSWER, "gpt-4o") > 0
    assert record.cost_micros > 0
    assert response.headers["x-switchboard-cost-usd"] == f"0.{record.cost_micros:06d}"
    # The bot still gets `usage`: the gateway's count, the same numbers it bills.
    usage = response.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        record.prompt_tokens,
        record.completion_tokens,
    )


def test_a_stream_without_upstream_usage_still_ends_with_the_usage_chunk_the_client_asked_for(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer, spec: SpecValidator
) -> None:
    upstream.enqueue(Reply(LONG_ANSWER, include_usage=False))
    body = {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "where is my parcel"}],
    }
    response = http.post(gateway.base_url + "/chat/completions", json=body)

    chunks = spec.validate_sse(response.text)
    last = chunks[-1]
    record = record_of(gateway, response)
    assert last["choices"] == []
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (
        record.prompt_tokens,
        record.completion_tokens,
    )
    assert record.usage_estimated is True and record.completion_tokens > 0


def test_upstream_usage_is_trusted_when_it_is_sent(
    http: httpx.Client, upstream: MockUpstream, gateway: GatewayServer
) -> None:
    upstream.enqueue(Reply(LONG_ANSWER, prompt_tokens=1000, completion_tokens=500))

    record = record_of(gateway, chat(http, model="gpt-4o"))

    assert (record.prompt_tokens, record.completion_tokens) == (1000, 500)
    assert record.usage_estimated is False
