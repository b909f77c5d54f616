"""The litellm tier against Anthropic's Messages API, mocked at the HTTP edge with respx.

litellm sends through aiohttp unless ``DISABLE_AIOHTTP_TRANSPORT`` is set; with it, its httpx
client goes through httpcore, which respx patches, so these tests see the exact request litellm
built for Anthropic and answer with Anthropic's own response bodies and SSE events.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from importlib.metadata import version
from types import ModuleType
from typing import Any

import httpx
import pytest
import respx

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.tiers.litellm_provider import (
    MAPPED_EXCEPTIONS,
    LitellmTier,
    load_litellm,
    map_litellm_error,
)
from gateway.usage import Usage
from tests.support.openai_spec import SpecValidator

# pydantic warns once per process when litellm's streaming types (TypedDicts with ReadOnly items)
# first get a schema; under "warnings are errors" litellm would turn it into a mid-stream failure.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

MODEL = "anthropic/claude-haiku-4-5-20251001"
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
KEY = "sk-ant-test-key"
MESSAGES_URL = "https://api.anthropic.com/v1/messages"
MESSAGES = [
    {"role": "system", "content": "You are a helpful shop assistant. Be brief."},
    {"role": "user", "content": "Where is my order?"},
]

MESSAGE_BODY: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": ANTHROPIC_MODEL,
    "content": [{"type": "text", "text": "Your order ships tomorrow."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 21,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}

STREAM_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_01Stream",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 21, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Your"}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": " order ships tomorrow."},
    },
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 7},
    },
    {"type": "message_stop"},
]


def sse(events: list[dict[str, Any]]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


def anthropic_error(status: int, kind: str, message: str, **headers: str) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    return load_litellm()


@pytest.fixture
def anthropic(litellm: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.Router]:
    """respx in front of api.anthropic.com, with litellm sending through httpx."""
    monkeypatch.setenv("DISABLE_AIOHTTP_TRANSPORT", "True")
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", True)
    # A client cached with the aiohttp transport would go around respx.
    litellm.in_memory_llm_clients_cache.flush_cache()
    with respx.mock(assert_all_called=False) as router:
        yield router
    litellm.in_memory_llm_clients_cache.flush_cache()


@pytest.fixture
async def tier(anthropic: respx.Router) -> AsyncIterator[LitellmTier]:
    t = LitellmTier(name="large", model=MODEL, api_key=KEY, api_base=None, timeout_s=5.0)
    yield t
    await t.aclose()


def sent_json(route: respx.Route) -> dict[str, Any]:
    body = json.loads(route.calls.last.request.content)
    assert isinstance(body, dict)
    return body


# --- answers -----------------------------------------------------------------------------------


async def test_complete_returns_the_answer_and_anthropics_usage(
    tier: LitellmTier, anthropic: respx.Router, spec: SpecValidator
) -> None:
    anthropic.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json=MESSAGE_BODY))

    completion = await tier.complete({"model": MODEL, "messages": MESSAGES})

    assert completion.text == "Your order ships tomorrow."
    assert completion.usage == Usage(prompt_tokens=21, completion_tokens=7)
    assert completion.model == ANTHROPIC_MODEL
    assert completion.logprobs is None
    choice = completion.body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Your order ships tomorrow.",
        "refusal": None,
    }
    spec.validate("CreateChatCompletionResponse", completion.body)


async def test_complete_reports_anthropics_prompt_cache_reads_as_cached_tokens(
    tier: LitellmTier, anthropic: respx.Router
) -> None:
    body = {**MESSAGE_BODY, "usage": {**MESSAGE_BODY["usage"], "cache_read_input_tokens": 8}}
    anthropic.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json=body))

    completion = await tier.complete({"model": MODEL, "messages": MESSAGES})

    assert completion.usage is not None
    assert completion.usage.cached_prompt_tokens == 8
    assert completion.usage.completion_tokens == 7


async def test_request_carries_the_key_and_the_system_prompt_in_anthropics_shape(
    tier: LitellmTier, anthropic: respx.Router
) -> None:
    route = anthropic.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json=MESSAGE_BODY))

    await tier.complete(
        {
            "model": MODEL,
            "messages": MESSAGES,
            "max_tokens": 200,
            "temperature": 0.2,
            "stop": ["\n\nCustomer:"],
            "user": "customer-42",
            # Fields a provider would refuse: never forwarded.
            "metadata": {"bot": "shop"},
            "store": True,
            "some_future_openai_field": {"x": 1},
        }
    )

    request = route.calls.last.request
    assert request.headers["x-api-key"] == KEY
    assert "anthropic-version" in request.headers
    assert "authorization" not in request.headers
    sent = sent_json(route)
    assert sent["model"] == ANTHROPIC_MODEL
    assert sent["system"] == [{"type": "text", "text": MESSAGES[0]["content"]}]
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert sent["max_tokens"] == 200
    assert sent["temperature"] == 0.2
    assert sent["stop_sequences"] == ["\n\nCustomer:"]
    assert sent["metadata"] == {"user_id": "customer-42"}
    assert "store" not in sent
    assert "some_future_openai_field" not in sent
    assert "stream" not in sent or sent["stream"] is False


async def test_tools_are_translated_and_tool_calls_come_back_in_openais_shape(
    tier: LitellmTier, anthropic: respx.Router, spec: SpecValidator
) -> None:
    body = {
        **MESSAGE_BODY,
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01A",
                "name": "order_status",
                "input": {"order_id": "A-1001"},
            }
        ],
        "stop_reason": "tool_use",
    }
    route = anthropic.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json=body))
    tool = {
        "type": "function",
        "function": {
            "name": "order_status",
            "description": "Look up an order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }

    completion = await tier.complete({"model": MODEL, "messages": MESSAGES, "tools": [tool]})

    assert sent_json(route)["tools"][0]["name"] == "order_status"
    choice = completion.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "order_status"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "A-1001"}
    spec.validate("CreateChatCompletionResponse", completion.body)


async def test_api_base_sends_to_that_host(anthropic: respx.Router) -> None:
    route = anthropic.post("https://llm-proxy.internal/v1/messages").mock(
        return_value=httpx.Response(200, json=MESSAGE_BODY)
    )
    tier = LitellmTier(
        name="large",
        model=MODEL,
        api_key=KEY,
        api_base="https://llm-proxy.internal",
        timeout_s=5.0,
    )
    try:
        completion = await tier.complete({"model": MODEL, "messages": MESSAGES})
    finally:
        await tier.aclose()

    assert route.called
    assert completion.text == "Your order ships tomorrow."


async def test_stream_yields_role_first_then_text_then_usage(
    tier: LitellmTier, anthropic: respx.Router, spec: SpecValidator
) -> None:
    route = anthropic.post(MESSAGES_URL).mock(
        return_value=httpx.Response(
            200, text=sse(STREAM_EVENTS), headers={"content-type": "text/event-stream"}
        )
    )

    stream = await tier.stream({"model": MODEL, "messages": MESSAGES, "stream": True})
    chunks = [chunk async for chunk in stream]

    assert sent_json(route)["stream"] is True
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["object"] == "chat.completion.chunk"
    with_choices = [c for c in chunks if c["choices"]]
    assert with_choices[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices)
    assert text == "Your order ships tomorrow."
    finishes = [c["choices"][0]["finish_reason"] for c in with_choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 21
    assert last["usage"]["completion_tokens"] == 7
    assert stream.usage == Usage(prompt_tokens=21, completion_tokens=7)
    assert stream.model == ANTHROPIC_MODEL


async def test_stream_failing_mid_way_raises_an_upstream_error(
    tier: LitellmTier, anthropic: respx.Router
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    anthropic.post(MESSAGES_URL).mock(
        return_value=httpx.Response(
            200,
            text=sse([*STREAM_EVENTS[:4], overloaded]),
            headers={"content-type": "text/event-stream"},
        )
    )

    stream = await tier.stream({"model": MODEL, "messages": MESSAGES, "stream": True})
    seen: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in stream:
            seen.append(chunk)

    assert seen, "the chunks before the failure were delivered"
    assert isinstance(caught.value.__cause__, Exception)
    assert "Overloaded" in caught.value.message


# --- errors from Anthropic ---------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    ("response", "expected", "words"),
    [
        (
            anthropic_error(429, "rate_limit_error", "Too many requests", **{"retry-after": "7"}),
            RateLimited,
            "Too many requests",
        ),
        (
            anthropic_error(401, "authentication_error", "invalid x-api-key"),
            UpstreamError,
            "api_key_env",
        ),
        (
            anthropic_error(403, "permission_error", "no access to this model"),
            UpstreamError,
            "api_key_env",
        ),
        (
            anthropic_error(400, "invalid_request_error", "max_tokens: 100000 > 64000"),
            InvalidRequest,
            "max_tokens: 100000 > 64000",
        ),
        (
            anthropic_error(404, "not_found_error", "model: claude-haiku-4-5-20251001"),
            UpstreamError,
            "does not know the model",
        ),
        (anthropic_error(529, "overloaded_error", "Overloaded"), UpstreamUnavailable, "Overloaded"),
        (anthropic_error(500, "api_error", "Internal server error"), UpstreamError, "(500)"),
    ],
    ids=["429", "401", "403", "400", "404", "529", "500"],
)
async def test_anthropic_error_statuses_become_gateway_errors(
    tier: LitellmTier,
    anthropic: respx.Router,
    response: httpx.Response,
    expected: type[GatewayError],
    words: str,
    streaming: bool,
) -> None:
    anthropic.post(MESSAGES_URL).mock(return_value=response)
    payload = {"model": MODEL, "messages": MESSAGES}

    with pytest.raises(GatewayError) as caught:
        if streaming:
            await tier.stream(payload)
        else:
            await tier.complete(payload)

    error = caught.value
    assert type(error) is expected
    assert words in error.message
    assert KEY not in error.message
    assert error.__cause__ is not None
    assert type(error.__cause__).__module__ == "litellm.exceptions"


async def test_rate_limit_passes_anthropics_retry_after_on(
    tier: LitellmTier, anthropic: respx.Router
) -> None:
    anthropic.post(MESSAGES_URL).mock(
        return_value=anthropic_error(429, "rate_limit_error", "slow down", **{"retry-after": "7"})
    )

    with pytest.raises(RateLimited) as caught:
        await tier.complete({"model": MODEL, "messages": MESSAGES})

    assert caught.value.headers["retry-after"] == "7"


async def test_rejected_key_says_which_setting_to_check_and_not_to_retry(
    tier: LitellmTier, anthropic: respx.Router
) -> None:
    anthropic.post(MESSAGES_URL).mock(
        return_value=anthropic_error(401, "authentication_error", "invalid x-api-key")
    )

    with pytest.raises(UpstreamError) as caught:
        await tier.complete({"model": MODEL, "messages": MESSAGES})

    assert caught.value.status == 502
    assert caught.value.code == "upstream_auth_failed"
    assert "API key" in caught.value.message
    assert "check the upstream's api_key_env" in caught.value.message
    assert caught.value.headers["x-should-retry"] == "false"


async def test_missing_key_fails_before_any_request(
    anthropic: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    route = anthropic.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json=MESSAGE_BODY))
    tier = LitellmTier(name="large", model=MODEL, api_key=None, api_base=None, timeout_s=5.0)
    try:
        with pytest.raises(UpstreamError) as caught:
            await tier.complete({"model": MODEL, "messages": MESSAGES})
    finally:
        await tier.aclose()

    assert "api_key_env" in caught.value.message
    assert not route.called


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), UpstreamUnavailable),
        (httpx.ConnectTimeout("timed out"), UpstreamTimeout),
        (httpx.ReadTimeout("timed out"), UpstreamTimeout),
        (httpx.RemoteProtocolError("peer closed connection"), UpstreamError),
    ],
    ids=["connect-refused", "connect-timeout", "read-timeout", "protocol-error"],
)
async def test_transport_failures_become_gateway_errors(
    tier: LitellmTier,
    anthropic: respx.Router,
    failure: Exception,
    expected: type[GatewayError],
    streaming: bool,
) -> None:
    anthropic.post(MESSAGES_URL).mock(side_effect=failure)
    payload = {"model": MODEL, "messages": MESSAGES}

    with pytest.raises(GatewayError) as caught:
        if streaming:
            await tier.stream(payload)
        else:
            await tier.complete(payload)

    assert type(caught.value) is expected
    assert caught.value.__cause__ is not None


async def test_messages_must_be_a_list(tier: LitellmTier) -> None:
    with pytest.raises(InvalidRequest):
        await tier.complete({"model": MODEL, "messages": "hello"})


async def test_concurrent_first_calls_share_one_litellm_module(litellm: ModuleType) -> None:
    loaded = await asyncio.gather(*(asyncio.to_thread(load_litellm) for _ in range(8)))
    assert all(module is litellm for module in loaded)


# --- every litellm exception is mapped ---------------------------------------------------------


def exported_exception_names(litellm: ModuleType) -> set[str]:
    return {
        name
        for name, cls in inspect.getmembers(litellm.exceptions, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__.partition(".")[0] == "litellm"
    }


def test_every_litellm_exception_is_mapped(litellm: ModuleType) -> None:
    exported = exported_exception_names(litellm)
    unmapped = sorted(exported - set(MAPPED_EXCEPTIONS))
    assert not unmapped, (
        f"litellm {version('litellm')} exports exception classes map_litellm_error does not name: "
        f"{unmapped}; add each to MAPPED_EXCEPTIONS in gateway/tiers/litellm_provider.py and to "
        "EXPECTED in this test"
    )
    untested = sorted(exported - set(EXPECTED))
    assert not untested, f"add {untested} to EXPECTED (and a constructor) in this test"


_REQUEST = httpx.Request("POST", MESSAGES_URL)
_M, _P = ANTHROPIC_MODEL, "anthropic"


def _response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, request=_REQUEST, headers=headers)


# How to build each class (litellm's constructors differ), and what it must become.
EXPECTED: dict[str, tuple[Callable[[Any], BaseException], type[GatewayError], int, str | None]] = {
    "APIConnectionError": (
        lambda E: E.APIConnectionError("connection reset", llm_provider=_P, model=_M),
        UpstreamUnavailable,
        503,
        "upstream_unavailable",
    ),
    "APIError": (
        lambda E: E.APIError(500, "api_error", llm_provider=_P, model=_M, request=_REQUEST),
        UpstreamError,
        502,
        "upstream_error",
    ),
    "APIResponseValidationError": (
        lambda E: E.APIResponseValidationError("bad json", llm_provider=_P, model=_M),
        UpstreamError,
        502,
        "upstream_bad_response",
    ),
    "AuthenticationError": (
        lambda E: E.AuthenticationError("invalid x-api-key", llm_provider=_P, model=_M),
        UpstreamError,
        502,
        "upstream_auth_failed",
    ),
    "BadGatewayError": (
        lambda E: E.BadGatewayError("bad gateway", llm_provider=_P, model=_M),
        UpstreamError,
        502,
        "upstream_error",
    ),
    "BadRequestError": (
        lambda E: E.BadRequestError("bad", model=_M, llm_provider=_P),
        InvalidRequest,
        400,
        None,
    ),
    "BlockedPiiEntityError": (
        lambda E: E.BlockedPiiEntityError("EMAIL_ADDRESS", guardrail_name="pii"),
        InvalidRequest,
        400,
        None,
    ),
    "BudgetExceededError": (
        lambda E: E.BudgetExceededError(current_cost=2.0, max_budget=1.0),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "CallerCredentialAuthenticationError": (
        lambda E: E.CallerCredentialAuthenticationError("bad key", llm_provider=_P, model=_M),
        UpstreamError,
        502,
        "upstream_auth_failed",
    ),
    "CallerCredentialRateLimitError": (
        lambda E: E.CallerCredentialRateLimitError(
            "slow down", llm_provider=_P, model=_M, headers={"retry-after": "9"}
        ),
        RateLimited,
        429,
        "rate_limit_exceeded",
    ),
    "ContentPolicyViolationError": (
        lambda E: E.ContentPolicyViolationError("policy", model=_M, llm_provider=_P),
        InvalidRequest,
        400,
        "content_policy_violation",
    ),
    "ContextWindowExceededError": (
        lambda E: E.ContextWindowExceededError("prompt is too long", model=_M, llm_provider=_P),
        InvalidRequest,
        400,
        "context_length_exceeded",
    ),
    "EndpointNotSupportedByModelError": (
        lambda E: E.EndpointNotSupportedByModelError("no chat", model=_M, llm_provider=_P),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "GuardrailRaisedException": (
        lambda E: E.GuardrailRaisedException(guardrail_name="g", message="blocked"),
        InvalidRequest,
        400,
        None,
    ),
    "ImageFetchError": (
        lambda E: E.ImageFetchError("cannot fetch image", model=_M, llm_provider=_P),
        InvalidRequest,
        400,
        "invalid_image_url",
    ),
    "InternalServerError": (
        lambda E: E.InternalServerError("api_error", llm_provider=_P, model=_M),
        UpstreamError,
        502,
        "upstream_error",
    ),
    "InvalidRequestError": (
        lambda E: E.InvalidRequestError("invalid", model=_M, llm_provider=_P),
        InvalidRequest,
        400,
        None,
    ),
    "JSONSchemaValidationError": (
        lambda E: E.JSONSchemaValidationError(
            model=_M, llm_provider=_P, raw_response="{}", schema="{}"
        ),
        UpstreamError,
        502,
        "upstream_bad_response",
    ),
    "LiteLLMUnknownProvider": (
        lambda E: E.LiteLLMUnknownProvider(model="claude-haiku-4-5"),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "MalformedRequestFieldError": (
        lambda E: E.MalformedRequestFieldError("bad field", model=_M, llm_provider=_P),
        InvalidRequest,
        400,
        None,
    ),
    "MidStreamFallbackError": (
        lambda E: E.MidStreamFallbackError("cut", model=_M, llm_provider=_P),
        UpstreamError,
        502,
        "upstream_stream_cut",
    ),
    "MockException": (
        lambda E: E.MockException(500, "mock", llm_provider=_P, model=_M),
        UpstreamError,
        502,
        "upstream_error",
    ),
    "ModelNotMappedError": (
        lambda E: E.ModelNotMappedError("not mapped"),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "ModifyResponseException": (
        lambda E: E.ModifyResponseException("replaced", model=_M, request_data={}),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "NotFoundError": (
        lambda E: E.NotFoundError("model: x", model=_M, llm_provider=_P),
        UpstreamError,
        502,
        "upstream_404",
    ),
    "OpenAIError": (lambda E: E.OpenAIError(), UpstreamError, 502, "upstream_error"),
    "PaymentRequiredError": (
        lambda E: E.PaymentRequiredError("pay", model=_M, llm_provider=_P),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "PermissionDeniedError": (
        lambda E: E.PermissionDeniedError(
            "denied", llm_provider=_P, model=_M, response=_response(403)
        ),
        UpstreamError,
        502,
        "upstream_auth_failed",
    ),
    "RateLimitError": (
        lambda E: E.RateLimitError(
            "slow down", llm_provider=_P, model=_M, response=_response(429, **{"retry-after": "7"})
        ),
        RateLimited,
        429,
        "rate_limit_exceeded",
    ),
    "RejectedRequestError": (
        lambda E: E.RejectedRequestError("rejected", model=_M, llm_provider=_P, request_data={}),
        InvalidRequest,
        400,
        None,
    ),
    "SensitiveDataRouteException": (
        lambda E: E.SensitiveDataRouteException(route_to_model="local", session_id="s"),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "ServiceUnavailableError": (
        lambda E: E.ServiceUnavailableError("overloaded", llm_provider=_P, model=_M),
        UpstreamUnavailable,
        503,
        "upstream_unavailable",
    ),
    "Timeout": (
        lambda E: E.Timeout("timed out", model=_M, llm_provider=_P),
        UpstreamTimeout,
        504,
        "upstream_timeout",
    ),
    "UnprocessableEntityError": (
        lambda E: E.UnprocessableEntityError(
            "unprocessable", model=_M, llm_provider=_P, response=_response(422)
        ),
        InvalidRequest,
        400,
        None,
    ),
    "UnsupportedEndpointError": (
        lambda E: E.UnsupportedEndpointError("no endpoint", model=_M, llm_provider=_P),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
    "UnsupportedParamsError": (
        lambda E: E.UnsupportedParamsError("bad param", llm_provider=_P, model=_M),
        InvalidRequest,
        400,
        "unsupported_parameter",
    ),
    "VectorStoreSearchError": (
        lambda E: E.VectorStoreSearchError([], model=_M, llm_provider=_P),
        UpstreamError,
        502,
        "upstream_misconfigured",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_litellm_exception_maps_to_its_gateway_error(litellm: ModuleType, name: str) -> None:
    build, expected, status, code = EXPECTED[name]
    if not hasattr(litellm.exceptions, name):
        pytest.skip(f"litellm {version('litellm')} has no {name}")
    exc = build(litellm.exceptions)
    assert type(exc).__name__ == name

    error = map_litellm_error(exc, tier="large", model=MODEL)

    assert type(error) is expected
    assert (error.status, error.code) == (status, code)
    assert error.message


def test_rate_limit_retry_after_comes_from_litellms_headers(litellm: ModuleType) -> None:
    exc = EXPECTED["RateLimitError"][0](litellm.exceptions)
    error = map_litellm_error(exc, tier="large", model=MODEL)
    assert error.headers["retry-after"] == "7"


def test_a_new_litellm_subclass_maps_like_its_parent(litellm: ModuleType) -> None:
    # What happens at run time after an upgrade, until someone maps the new class explicitly.
    new_class = type("ShinyNewContextError", (litellm.exceptions.ContextWindowExceededError,), {})
    new_class.__module__ = "litellm.exceptions"
    exc = new_class("prompt is too long", model=_M, llm_provider=_P)

    assert type(map_litellm_error(exc, tier="large", model=MODEL)) is InvalidRequest


def test_exceptions_litellm_did_not_wrap_are_mapped_by_kind_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timeout = map_litellm_error(TimeoutError(), tier="large", model=MODEL)
    refused = map_litellm_error(httpx.ConnectError("refused"), tier="large", model=MODEL)
    with caplog.at_level(logging.WARNING, logger="gateway.tiers"):
        other = map_litellm_error(KeyError("choices"), tier="large", model=MODEL)

    assert type(timeout) is UpstreamTimeout
    assert type(refused) is UpstreamUnavailable
    assert type(other) is UpstreamError
    assert "KeyError" in other.message
    assert "unmapped exception from litellm" in caplog.text


def test_gateway_errors_pass_through_unchanged() -> None:
    error = InvalidRequest("bad")
    assert map_litellm_error(error, tier="large", model=MODEL) is error
