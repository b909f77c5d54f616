"""The mock upstream speaks OpenAI's wire format and misbehaves exactly as asked.

Driven with httpx (what openai-python uses) and aiohttp (what the gateway's hosted tier uses), so
the faults are checked as each of them sees them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.mock_upstream import (
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
from tests.support.openai_spec import SpecValidator, SpecViolation, require_spec

MESSAGES = [
    {"role": "system", "content": "You are a helpful support bot."},
    {"role": "user", "content": "where is my parcel"},
]
BODY: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
STREAM_BODY: dict[str, Any] = {
    **BODY,
    "stream": True,
    "stream_options": {"include_usage": True},
}


@pytest.fixture(scope="module")
def server() -> Iterator[MockUpstream]:
    with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(server: MockUpstream) -> MockUpstream:
    server.reset()
    return server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as http:
        yield http


@pytest.fixture(scope="module")
def spec() -> SpecValidator:
    return require_spec()


def chat(client: httpx.Client, upstream: MockUpstream, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"{upstream.base_url}/chat/completions", json=body)


def data_events(text: str) -> list[str]:
    return [event.removeprefix("data: ") for event in text.split("\n\n") if event]


# ----------------------------------------------------------------- default answers


def test_default_echo_is_a_valid_chat_completion(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    response = chat(client, upstream, BODY)
    assert response.status_code == 200
    completion = response.json()
    spec.validate("CreateChatCompletionResponse", completion)
    assert completion["id"].startswith("chatcmpl-mock-")
    assert completion["model"] == "gpt-4o-mini"
    choice = completion["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "echo: where is my parcel",
        "refusal": None,
    }
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"


def test_usage_for_matches_what_the_server_reports(
    upstream: MockUpstream, client: httpx.Client
) -> None:
    body = {
        **BODY,
        "messages": [
            *MESSAGES,
            {"role": "user", "content": [{"type": "text", "text": "and my refund"}]},
        ],
    }
    usage = chat(client, upstream, body).json()["usage"]
    # 6 + 4 + 3 words, plus 3 per message; the answer is "echo: and my refund".
    assert MockUpstream.usage_for(body) == (22, 4)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == MockUpstream.usage_for(body)
    assert usage["total_tokens"] == 26


def test_logprobs_are_returned_per_word_when_asked(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    completion = chat(client, upstream, {**BODY, "logprobs": True}).json()
    spec.validate("CreateChatCompletionResponse", completion)
    tokens = completion["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in tokens] == ["echo:", "where", "is", "my", "parcel"]


def test_models_list_is_valid(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    listing = client.get(f"{upstream.base_url}/models").json()
    spec.validate("ListModelsResponse", listing)
    assert [m["id"] for m in listing["data"]] == ["mock-small", "mock-large"]


# ----------------------------------------------------------------- streaming


def test_stream_with_include_usage_ends_with_a_usage_only_chunk(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    response = chat(client, upstream, STREAM_BODY)
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = spec.validate_sse(response.content)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == MockUpstream.usage_for(STREAM_BODY)[0]
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]]
    assert "".join(deltas) == "echo: where is my parcel"
    assert deltas[1:3] == ["echo:", " where"]


def test_stream_without_include_usage_has_no_usage_anywhere(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    response = chat(client, upstream, {**BODY, "stream": True})
    chunks = spec.validate_sse(response.content)
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)


def test_chunk_delay_spaces_out_chunks() -> None:
    with MockUpstream(chunk_delay=0.05) as slow, httpx.Client() as http:
        started = time.monotonic()
        response = chat(http, slow, STREAM_BODY)
        assert response.text.endswith("data: [DONE]\n\n")
        assert time.monotonic() - started >= 0.05 * 8


# ----------------------------------------------------------------- behaviours


def test_reply_overrides_content_usage_and_model(
    upstream: MockUpstream, client: httpx.Client
) -> None:
    upstream.enqueue(Reply("Hi there", prompt_tokens=100, model="gpt-4o-2024-08-06"))
    completion = chat(client, upstream, BODY).json()
    assert completion["choices"][0]["message"]["content"] == "Hi there"
    assert completion["model"] == "gpt-4o-2024-08-06"
    assert completion["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 2,
        "total_tokens": 102,
    }


def test_reply_without_usage_omits_it_in_both_modes(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    upstream.enqueue(Reply("Hi", include_usage=False), Reply("Hi", include_usage=False))
    assert "usage" not in chat(client, upstream, BODY).json()
    chunks = spec.validate_sse(chat(client, upstream, STREAM_BODY).content)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_queue_is_consumed_in_order_then_the_echo_resumes(
    upstream: MockUpstream, client: httpx.Client
) -> None:
    upstream.enqueue(Reply("one"), Reply("two"))
    assert upstream.pending == 2
    answers = [
        chat(client, upstream, BODY).json()["choices"][0]["message"]["content"] for _ in "abc"
    ]
    assert answers == ["one", "two", "echo: where is my parcel"]
    assert upstream.pending == 0


def test_models_requests_do_not_consume_the_queue(
    upstream: MockUpstream, client: httpx.Client
) -> None:
    upstream.enqueue(Status(500))
    client.get(f"{upstream.base_url}/models")
    assert upstream.pending == 1


def test_status_429_sends_headers_and_an_openai_error_body(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    upstream.enqueue(Status(429, headers={"retry-after": "2"}))
    response = chat(client, upstream, BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    spec.validate("ErrorResponse", response.json())
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_status_with_custom_bodies(upstream: MockUpstream, client: httpx.Client) -> None:
    upstream.enqueue(Status(502, "<html>Bad Gateway</html>"), Status(500, {"detail": "boom"}))
    first = chat(client, upstream, BODY)
    assert (first.status_code, first.text) == (502, "<html>Bad Gateway</html>")
    assert first.headers["content-type"].startswith("text/plain")
    second = chat(client, upstream, STREAM_BODY)
    assert (second.status_code, second.json()) == (500, {"detail": "boom"})


def test_delay_holds_the_answer_back(upstream: MockUpstream, client: httpx.Client) -> None:
    upstream.enqueue(Delay(2), Delay(0.1, then=Status(503)))
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{upstream.base_url}/chat/completions", json=BODY, timeout=0.2)
    started = time.monotonic()
    assert chat(client, upstream, BODY).status_code == 503
    assert time.monotonic() - started >= 0.1


def test_malformed_json_is_a_200_that_does_not_parse(
    upstream: MockUpstream, client: httpx.Client
) -> None:
    upstream.enqueue(MalformedJson())
    response = chat(client, upstream, BODY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_cut_stream_drops_the_connection_before_done(upstream: MockUpstream) -> None:
    upstream.enqueue(CutStream(after_chunks=2))
    received = b""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{upstream.base_url}/chat/completions", json=STREAM_BODY) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in resp.content.iter_any():
                    received += data
    events = data_events(received.decode())
    assert len(events) == 3  # the role chunk and two content chunks
    assert "[DONE]" not in received.decode()


async def test_cut_stream_on_a_non_stream_request_cuts_the_body(upstream: MockUpstream) -> None:
    upstream.enqueue(CutStream(after_chunks=0))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{upstream.base_url}/chat/completions", json=BODY) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()


async def test_drop_disconnects_before_any_byte(upstream: MockUpstream) -> None:
    upstream.enqueue(Drop())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(f"{upstream.base_url}/chat/completions", json=BODY)
    assert upstream.history[-1].json == BODY


def test_stall_stream_goes_silent_then_finishes(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    upstream.enqueue(StallStream(after_chunks=1, seconds=0.3))
    started = time.monotonic()
    with client.stream("POST", f"{upstream.base_url}/chat/completions", json=STREAM_BODY) as resp:
        body = resp.read()
    assert time.monotonic() - started >= 0.3
    spec.validate_sse(body)

    upstream.enqueue(StallStream(after_chunks=1, seconds=5))
    timeout = httpx.Timeout(5, read=0.2)
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{upstream.base_url}/chat/completions", json=STREAM_BODY, timeout=timeout)


def test_malformed_sse_sends_an_unparsable_event(
    upstream: MockUpstream, client: httpx.Client, spec: SpecValidator
) -> None:
    upstream.enqueue(MalformedSse(after_chunks=1))
    text = chat(client, upstream, STREAM_BODY).text
    assert data_events(text)[2] == "{not json"
    assert text.endswith("data: [DONE]\n\n")
    with pytest.raises(SpecViolation, match="not JSON"):
        spec.validate_sse(text)


# ----------------------------------------------------------------- recording, auth, lifecycle


def test_history_records_method_path_headers_and_body(
    upstream: MockUpstream, client: httpx.Client
) -> None:
    client.post(
        f"{upstream.base_url}/chat/completions",
        json=BODY,
        headers={"Authorization": "Bearer sk-test", "X-Stainless-Lang": "python"},
    )
    client.get(f"{upstream.base_url}/models")
    first, second = upstream.history
    assert (first.method, first.path, first.json) == ("POST", "/v1/chat/completions", BODY)
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.headers["x-stainless-lang"] == "python"
    assert (second.method, second.path, second.json) == ("GET", "/v1/models", None)


def test_reset_clears_queue_and_history(upstream: MockUpstream, client: httpx.Client) -> None:
    upstream.enqueue(Status(500))
    chat(client, upstream, BODY)
    upstream.enqueue(Status(500))
    upstream.reset()
    assert (upstream.history, upstream.pending) == ([], 0)


def test_api_key_is_enforced_with_an_openai_401() -> None:
    with MockUpstream(api_key="sk-upstream") as keyed, httpx.Client() as http:
        url = f"{keyed.base_url}/chat/completions"
        denied = http.post(url, json=BODY, headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "invalid_api_key"
        allowed = http.post(url, json=BODY, headers={"Authorization": "Bearer sk-upstream"})
        assert allowed.status_code == 200
        assert len(keyed.history) == 2


def test_invalid_request_bodies_get_a_400(upstream: MockUpstream, client: httpx.Client) -> None:
    url = f"{upstream.base_url}/chat/completions"
    assert client.post(url, content=b"not json").status_code == 400
    missing = client.post(url, json={"model": "m"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"


def test_closed_port_url_refuses_connections(client: httpx.Client) -> None:
    with pytest.raises(httpx.ConnectError):
        client.get(f"{closed_port_url()}/models")


def mock_threads() -> int:
    return sum(t.name == "mock-upstream" for t in threading.enumerate())


def test_stop_cancels_requests_in_flight_and_joins_the_thread() -> None:
    before = mock_threads()
    upstream = MockUpstream().start()
    assert mock_threads() == before + 1
    upstream.enqueue(Delay(30))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            with httpx.Client(timeout=10) as http:
                chat(http, upstream, BODY)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while not upstream.history:
        time.sleep(0.01)
    started = time.monotonic()
    upstream.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 2
    assert len(outcome) == 1
    assert mock_threads() == before
    upstream.stop()  # idempotent
