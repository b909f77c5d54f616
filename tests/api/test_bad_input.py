"""Bad requests get the right 4xx with an OpenAI error body, never a 500, and are accounted for.

Raw requests go through httpx, since the openai client cannot send a malformed body; where the
client can send the request, its own exception classes are checked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.ledger import LedgerQuery
from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, GLOBEX_KEY, GatewayServer
from tests.support.mock_upstream import MockUpstream
from tests.support.openai_spec import SpecValidator

HELLO = [{"role": "user", "content": "where is my parcel"}]
ACME = {"authorization": f"Bearer {ACME_KEY}"}
GLOBEX = {"authorization": f"Bearer {GLOBEX_KEY}"}
REQUEST_ID = "x-switchboard-request-id"
MODELS_FOR_ACME = "auto, gpt-4o-mini, gpt-4o, small-only"


@pytest.fixture
def http(gateway: GatewayServer, upstream: MockUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as c:
        yield c


def chat(
    http: httpx.Client,
    body: Any = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /chat/completions with a JSON body, or raw ``content`` when the body must be broken."""
    if content is None:
        content = json.dumps(body).encode()
    return http.post(
        "/chat/completions",
        content=content,
        headers={"content-type": "application/json", **(ACME if headers is None else headers)},
    )


def openai_error(
    response: httpx.Response, status: int, spec: SpecValidator, *, code: str | None = None
) -> dict[str, Any]:
    """The ``error`` object of a response that must be an OpenAI error with ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get(REQUEST_ID), "every answer, errors too, carries the request id"
    body = response.json()
    spec.validate("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    if code is not None:
        assert error["code"] == code
    return error


def ledger_has(gateway: GatewayServer, request_id: str) -> bool:
    ledger = gateway.switchboard.runtime.ledger
    ledger.flush()
    return any(r.request_id == request_id for r in ledger.records(LedgerQuery()))


# --------------------------------------------------------------------------- the body


def test_malformed_json_body_is_a_400_saying_it_is_not_json(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    response = chat(http, content=b'{"model": "auto", "messages": [')

    error = openai_error(response, 400, spec)
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]
    assert upstream.history == []


def test_a_json_array_body_is_a_400_asking_for_an_object(
    http: httpx.Client, spec: SpecValidator
) -> None:
    response = chat(http, [{"model": "auto", "messages": HELLO}])

    error = openai_error(response, 400, spec)
    assert error["type"] == "invalid_request_error"
    assert "must be a JSON object" in error["message"]


def test_an_empty_body_is_a_400_naming_the_required_fields(
    http: httpx.Client, spec: SpecValidator
) -> None:
    error = openai_error(chat(http, content=b""), 400, spec)

    assert "`model` and `messages`" in error["message"]


def test_missing_messages_is_a_400_with_param_messages(
    http: httpx.Client, spec: SpecValidator
) -> None:
    error = openai_error(chat(http, {"model": "auto"}), 400, spec)

    assert error["param"] == "messages"
    assert "messages" in error["message"]


def test_an_empty_messages_list_is_a_400_asking_for_one_message(
    http: httpx.Client, spec: SpecValidator
) -> None:
    error = openai_error(chat(http, {"model": "auto", "messages": []}), 400, spec)

    assert error["param"] == "messages"
    assert error["message"] == "Invalid request: `messages` must contain at least one message."


def test_the_openai_client_gets_bad_request_error_for_empty_messages(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="auto", messages=[])

    assert raised.value.status_code == 400
    assert raised.value.param == "messages"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ("where is my parcel", "messages"),
        (["where is my parcel"], "messages[0]"),
        ([{"role": 123, "content": "hi"}], "messages[0].role"),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
        ([{"content": "hi"}], "messages[0]"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
    ],
    ids=["string", "list-of-strings", "role-int", "role-unknown", "no-role", "content-int"],
)
def test_messages_of_the_wrong_shape_are_a_400_pointing_at_the_bad_part(
    http: httpx.Client, spec: SpecValidator, messages: Any, param: str
) -> None:
    error = openai_error(chat(http, {"model": "auto", "messages": messages}), 400, spec)

    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [{"messages": HELLO}, {"model": 42, "messages": HELLO}, {"model": "", "messages": HELLO}],
    ids=["missing", "int", "empty"],
)
def test_a_missing_or_mistyped_model_is_a_400_with_param_model(
    http: httpx.Client, spec: SpecValidator, body: dict[str, Any]
) -> None:
    error = openai_error(chat(http, body), 400, spec)

    assert error["param"] == "model"


@pytest.mark.parametrize("max_tokens", [0, -5, "ten", 1.5])
def test_max_tokens_that_is_not_a_positive_int_is_a_400(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream, max_tokens: object
) -> None:
    body = {"model": "auto", "messages": HELLO, "max_tokens": max_tokens}

    error = openai_error(chat(http, body), 400, spec)

    assert error["param"] == "max_tokens"
    assert upstream.history == []


def test_the_openai_client_gets_bad_request_error_for_max_tokens_zero(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="auto", messages=HELLO, max_tokens=0)

    assert raised.value.param == "max_tokens"


def test_stream_given_as_a_string_is_a_400_with_param_stream(
    http: httpx.Client, spec: SpecValidator
) -> None:
    body = {"model": "auto", "messages": HELLO, "stream": "yes"}

    error = openai_error(chat(http, body), 400, spec)

    assert error["param"] == "stream"


def test_unknown_request_fields_are_accepted_and_forwarded_upstream(
    http: httpx.Client, upstream: MockUpstream
) -> None:
    body = {
        "model": "auto",
        "messages": HELLO,
        "foo_new_param": 1,
        "metadata": {"order": "A-1042", "channel": "web"},
    }

    response = chat(http, body)

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: where is my parcel"
    sent = upstream.history[-1].json
    assert sent["foo_new_param"] == 1
    assert sent["metadata"] == {"order": "A-1042", "channel": "web"}


def test_an_over_size_body_is_a_413_request_too_large(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    huge = [{"role": "user", "content": "x" * 70_000}]  # TEST_CONFIG allows 65536 bytes

    error = openai_error(chat(http, {"model": "auto", "messages": huge}), 413, spec)

    assert error["code"] == "request_too_large"
    assert error["type"] == "invalid_request_error"
    assert upstream.history == []


def test_a_body_just_under_the_limit_is_served(http: httpx.Client) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "word " * 12_000}]}
    assert 60_000 < len(json.dumps(body)) < 65_536

    assert chat(http, body).status_code == 200


# --------------------------------------------------------------------------- models


def test_an_unknown_model_is_a_404_model_not_found_listing_the_available_models(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    error = openai_error(
        chat(http, {"model": "gpt-7-ultra", "messages": HELLO}), 404, spec, code="model_not_found"
    )

    assert error["param"] == "model"
    assert "'gpt-7-ultra'" in error["message"]
    assert error["message"].endswith(f"models available: {MODELS_FOR_ACME}")
    assert upstream.history == []


def test_the_openai_client_gets_not_found_error_for_an_unknown_model(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-7-ultra", messages=HELLO)

    assert raised.value.code == "model_not_found"
    assert raised.value.response.headers.get(REQUEST_ID)


@pytest.mark.parametrize("model", ["small-only", "gpt-4o-mini"])
def test_a_model_the_tenant_may_not_use_is_a_404_listing_only_its_models(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream, model: str
) -> None:
    response = chat(http, {"model": model, "messages": HELLO}, headers=GLOBEX)

    error = openai_error(response, 404, spec, code="model_not_found")
    assert error["message"].endswith("models available: auto, gpt-4o")
    assert upstream.history == []


def test_a_model_the_tenant_may_use_is_served(http: httpx.Client) -> None:
    response = chat(http, {"model": "gpt-4o", "messages": HELLO}, headers=GLOBEX)

    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- keys


def test_a_missing_key_is_a_401_invalid_api_key_saying_how_to_send_one(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    response = chat(http, {"model": "auto", "messages": HELLO}, headers={})

    error = openai_error(response, 401, spec, code="invalid_api_key")
    assert error["type"] == "authentication_error"
    assert "Authorization: Bearer" in error["message"]
    assert upstream.history == []


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer sk-test-nobody-0000000000"},
        {"authorization": f"Basic {ACME_KEY}"},
        {"authorization": "Bearer"},
        {"api-key": "sk-test-nobody-0000000000"},
    ],
    ids=["wrong-key", "wrong-scheme", "empty-bearer", "wrong-azure-key"],
)
def test_a_wrong_key_is_a_401_invalid_api_key(
    http: httpx.Client, spec: SpecValidator, headers: dict[str, str]
) -> None:
    response = chat(http, {"model": "auto", "messages": HELLO}, headers=headers)

    openai_error(response, 401, spec, code="invalid_api_key")


def test_the_openai_client_gets_authentication_error_for_a_wrong_key(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    with openai.OpenAI(base_url=gateway.base_url, api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as raised:
            bad.chat.completions.create(model="auto", messages=HELLO)

    assert raised.value.code == "invalid_api_key"
    assert upstream.history == []


def test_an_azure_style_api_key_header_is_accepted(
    http: httpx.Client, gateway: GatewayServer
) -> None:
    response = chat(http, {"model": "auto", "messages": HELLO}, headers={"api-key": GLOBEX_KEY})

    assert response.status_code == 200, response.text
    assert ledger_record(gateway, response.headers[REQUEST_ID]).tenant == "globex"


# --------------------------------------------------------------------------- URLs and ids


def test_an_unknown_url_is_a_404_with_an_openai_error_body(
    http: httpx.Client, spec: SpecValidator
) -> None:
    response = http.get("/nothing", headers=ACME)

    error = openai_error(response, 404, spec)
    assert error["code"] == "unknown_url"


def test_every_error_carries_its_own_request_id(http: httpx.Client) -> None:
    responses = [
        chat(http, content=b"{"),
        chat(http, {"model": "nope", "messages": HELLO}),
        chat(http, {"model": "auto", "messages": HELLO}, headers={}),
        http.get("/nothing"),
    ]

    ids = [r.headers[REQUEST_ID] for r in responses]
    assert [r.status_code for r in responses] == [400, 404, 401, 404]
    assert all(len(i) == 32 for i in ids)
    assert len(set(ids)) == len(ids)


# --------------------------------------------------------------------------- the ledger


@pytest.mark.parametrize(
    ("body", "status", "code", "requested_model"),
    [
        (b'{"model": "auto", "messages": [', 400, None, ""),
        (b'{"model": "auto", "messages": [], "user": "u-7"}', 400, None, ""),
        (
            b'{"model": "gpt-7-ultra", "messages": [{"role": "user", "content": "hi"}]}',
            404,
            "model_not_found",
            "gpt-7-ultra",
        ),
    ],
    ids=["malformed", "invalid", "unknown-model"],
)
def test_requests_failing_after_auth_are_in_the_ledger_with_tenant_and_status(
    http: httpx.Client,
    gateway: GatewayServer,
    body: bytes,
    status: int,
    code: str | None,
    requested_model: str,
) -> None:
    response = chat(http, content=body, headers=GLOBEX)
    assert response.status_code == status

    record = ledger_record(gateway, response.headers[REQUEST_ID])
    assert (record.tenant, record.status, record.error_code) == ("globex", status, code)
    assert record.requested_model == requested_model
    assert (record.route, record.model) == ("none", None)
    assert (record.prompt_tokens, record.completion_tokens, record.cost_micros) == (0, 0, 0)


def test_an_over_size_body_is_in_the_ledger_as_413(
    http: httpx.Client, gateway: GatewayServer
) -> None:
    huge = [{"role": "user", "content": "x" * 70_000}]
    response = chat(http, {"model": "auto", "messages": huge})

    record = ledger_record(gateway, response.headers[REQUEST_ID])
    assert (record.tenant, record.status, record.error_code) == ("acme", 413, "request_too_large")


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer sk-test-nobody-0000000000"}], ids=["none", "wrong"]
)
def test_unauthenticated_requests_are_not_in_the_ledger(
    http: httpx.Client, gateway: GatewayServer, headers: dict[str, str]
) -> None:
    response = chat(http, {"model": "auto", "messages": HELLO}, headers=headers)
    assert response.status_code == 401

    assert not ledger_has(gateway, response.headers[REQUEST_ID])
