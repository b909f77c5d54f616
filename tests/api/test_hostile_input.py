"""Hostile input through a real server on a real port: each gets a 4xx with a clear message.

What a careless or malicious client can send: bodies far over the limit, JSON nested 10,000
deep, bytes that are not UTF-8, NUL characters, a message of a million characters, absurd
`max_tokens` and `n`, CR/LF meant to inject response headers, content parts of unknown types.
Every answer must be an OpenAI error body with the request id; nothing may reach the upstream.
Client timeouts catch a hang (a timeout fails the test); nothing here asserts on speed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.gateway_server import (
    ACME_KEY,
    ADMIN_KEY,
    TEST_CONFIG,
    GatewayServer,
    gateway_env,
)
from tests.support.mock_upstream import MockUpstream, Reply
from tests.support.openai_spec import SpecValidator

LIMIT = 4 * 1024 * 1024
# The shared test config with a body limit large enough for a message of a million characters,
# and the small tier's context window known (as llama.cpp's is), so the large tier's (128k, from
# litellm) is not the only one: a tier whose window nobody knows would be sent anything.
CONFIG = TEST_CONFIG.replace("body_limit_bytes: 65536", f"body_limit_bytes: {LIMIT}").replace(
    "    max_output_tokens: 256\n",
    "    max_output_tokens: 256\n    capabilities: { context_window: 8192 }\n",
)
ACME = {"authorization": f"Bearer {ACME_KEY}", "content-type": "application/json"}
HELLO = [{"role": "user", "content": "where is my parcel"}]


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    assert CONFIG != TEST_CONFIG
    data_dir = tmp_path_factory.mktemp("hostile-data")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), CONFIG) as server:
        yield server


@pytest.fixture
def http(gateway: GatewayServer, upstream: MockUpstream) -> Iterator[httpx.Client]:
    # A hang fails the test through this timeout; nothing asserts on how fast an answer came.
    with httpx.Client(base_url=gateway.base_url, timeout=30) as c:
        yield c


def error_of(response: httpx.Response, status: int, spec: SpecValidator) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-switchboard-request-id")
    body = response.json()
    spec.validate("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    return error


def post_raw(http: httpx.Client, content: bytes, path: str = "/chat/completions") -> httpx.Response:
    return http.post(path, content=content, headers=ACME)


# --------------------------------------------------------------------------- size and shape


def test_a_20_mb_body_is_a_413_naming_the_limit_and_its_config_key(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    text = "x" * (20 * 1024 * 1024)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})

    error = error_of(post_raw(http, body.encode()), 413, spec)

    assert error["code"] == "request_too_large"
    assert str(LIMIT) in error["message"] and "server.body_limit_bytes" in error["message"]
    assert upstream.history == []


def test_a_20_mb_body_sent_chunked_without_a_length_is_a_413_too(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    response = http.post("/chat/completions", content=chunks(), headers=ACME)

    error = error_of(response, 413, spec)
    assert error["code"] == "request_too_large"
    assert upstream.history == []


def test_json_nested_10000_deep_is_a_400_saying_so(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    body = b'{"model": "auto", "messages": ' + deep + b"}"

    error = error_of(post_raw(http, body), 400, spec)

    assert "nests arrays or objects too deeply" in error["message"]
    assert upstream.history == []


@pytest.mark.parametrize("path", ["/embeddings", "/completions", "/route/explain", "/feedback"])
def test_deep_nesting_is_a_400_on_every_endpoint_that_reads_json(
    http: httpx.Client, spec: SpecValidator, path: str
) -> None:
    error = error_of(post_raw(http, b"{" + b'"a":{' * 10_000 + b"}" * 10_001, path), 400, spec)

    assert "too deeply" in error["message"]


def test_bytes_that_are_not_utf8_are_a_400_asking_for_utf8(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    body = b'{"model": "auto", "messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}]}'

    error = error_of(post_raw(http, body), 400, spec)

    assert "not valid UTF-8" in error["message"]
    assert upstream.history == []


@pytest.mark.parametrize("path", ["/embeddings", "/completions", "/route/explain", "/feedback"])
def test_invalid_utf8_is_a_400_on_every_endpoint_that_reads_json(
    http: httpx.Client, spec: SpecValidator, path: str
) -> None:
    body = b'{"model": "auto", "input": "\xff", "prompt": "\xff", "request_id": "\xff"}'

    error = error_of(post_raw(http, body, path), 400, spec)

    assert "UTF-8" in error["message"]


def test_a_raw_nul_byte_is_a_400_saying_the_body_is_not_json(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    body = b'{"model": "auto", "messages": [{"role": "user", "content": "hi\x00there"}]}'

    error = error_of(post_raw(http, body), 400, spec)

    assert "not valid JSON" in error["message"]
    assert upstream.history == []


def test_an_escaped_nul_character_is_a_400_naming_where_it_is(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    messages = [*HELLO, {"role": "user", "content": "order\u0000 A-1042"}]

    error = error_of(
        post_raw(http, json.dumps({"model": "auto", "messages": messages}).encode()), 400, spec
    )

    assert error["param"] == "messages[1].content"
    assert "NUL character" in error["message"] and "messages[1].content" in error["message"]
    assert upstream.history == []


def test_a_backslash_u0000_typed_as_text_is_not_a_nul(http: httpx.Client) -> None:
    # The customer typed the six characters \u0000; JSON carries them as "\\u0000".
    body = {"model": "auto", "messages": [{"role": "user", "content": "what is \\u0000"}]}

    response = post_raw(http, json.dumps(body).encode())

    assert response.status_code == 200, response.text


def test_a_message_of_a_million_characters_is_a_400_naming_the_context_windows(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream
) -> None:
    words = "where is my parcel " * (1_000_000 // 19)
    body = {"model": "auto", "messages": [{"role": "user", "content": words}]}

    response = post_raw(http, json.dumps(body).encode())

    error = error_of(response, 400, spec)
    assert "No configured tier can serve this request" in error["message"]
    assert "context window 8192 <" in error["message"]
    assert upstream.history == []


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -1),
        ("max_tokens", 10**23),
        ("max_tokens", 2**63),
        ("max_completion_tokens", -100),
        ("max_completion_tokens", 10**9),
        ("n", 1000),
        ("n", -1),
    ],
)
def test_out_of_range_numbers_are_a_400_naming_the_field(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream, field: str, value: int
) -> None:
    body = {"model": "auto", "messages": HELLO, field: value}

    error = error_of(post_raw(http, json.dumps(body).encode()), 400, spec)

    assert error["param"] == field
    assert field in error["message"]
    assert upstream.history == []


# --------------------------------------------------------------------------- content parts


@pytest.mark.parametrize(
    ("part", "says"),
    [
        ({"type": "video_url", "video_url": {"url": "https://x.example/v.mp4"}}, "'video_url'"),
        ({"text": "no type at all"}, "has no `type`"),
        ({"type": ["text"], "text": "a list as type"}, "not a string"),
    ],
)
def test_unknown_content_part_types_are_a_400_naming_the_part_and_the_known_types(
    http: httpx.Client, spec: SpecValidator, upstream: MockUpstream, part: Any, says: str
) -> None:
    content = [{"type": "text", "text": "look at this"}, part]
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}

    error = error_of(post_raw(http, json.dumps(body).encode()), 400, spec)

    assert error["param"] == "messages[0].content[1].type"
    assert says in error["message"]
    assert "known types: file, image_url" in error["message"]
    assert upstream.history == []


def test_known_content_part_types_are_served(http: httpx.Client) -> None:
    content = [{"type": "text", "text": "where is my parcel"}]
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}

    assert post_raw(http, json.dumps(body).encode()).status_code == 200


# --------------------------------------------------------------------------- header injection


def no_injected_header(response: httpx.Response) -> None:
    assert "x-injected" not in response.headers
    for name, value in response.headers.items():
        assert "\r" not in value and "\n" not in value, (name, value)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "auto\r\nx-injected: 1", "messages": HELLO},
        {"model": "auto", "messages": HELLO, "user": "u-1\r\nx-injected: 1"},
        {"model": "auto", "messages": [{"role": "user", "content": "hi\r\nx-injected: 1"}]},
    ],
    ids=["model", "user", "content"],
)
def test_cr_lf_in_echoed_values_never_becomes_a_response_header(
    http: httpx.Client, body: dict[str, Any]
) -> None:
    response = post_raw(http, json.dumps(body).encode())

    assert response.status_code in (200, 404), response.text
    no_injected_header(response)


def test_an_upstream_model_name_with_cr_lf_never_becomes_a_response_header(
    http: httpx.Client, upstream: MockUpstream
) -> None:
    # The answer's model name is the upstream's to choose; it is echoed in x-switchboard-model.
    upstream.enqueue(Reply("fine", model="mock-small\r\nx-injected: 1"))

    response = post_raw(http, json.dumps({"model": "auto", "messages": HELLO}).encode())

    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-model"] == "mock-small  x-injected: 1"
    no_injected_header(response)


def test_cr_lf_in_the_model_name_is_escaped_in_the_404_message(
    http: httpx.Client, spec: SpecValidator
) -> None:
    body = {"model": "auto\r\nx-injected: 1", "messages": HELLO}

    error = error_of(post_raw(http, json.dumps(body).encode()), 404, spec)

    assert "'auto\\r\\nx-injected: 1'" in error["message"]


def test_an_admin_tenant_name_with_cr_lf_in_explain_is_a_400_and_no_header(
    gateway: GatewayServer, spec: SpecValidator
) -> None:
    response = httpx.post(
        gateway.base_url + "/route/explain",
        params={"tenant": "acme\r\nx-injected: 1"},
        json={"model": "auto", "messages": HELLO},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )

    error = error_of(response, 400, spec)
    assert error["param"] == "tenant"
    no_injected_header(response)


def raw_request(gateway: GatewayServer, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes the HTTP clients refuse to build (a header value with a bare CR/LF)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_request_id_header_with_an_injected_line_is_never_echoed(
    gateway: GatewayServer,
) -> None:
    body = json.dumps({"model": "auto", "messages": HELLO}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
        b"authorization: Bearer " + ACME_KEY.encode() + b"\r\n"
        b"content-type: application/json\r\n"
        b"x-request-id: abc\rx-injected: 1\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )

    answer = raw_request(gateway, head, body)

    status_line, _, rest = answer.partition(b"\r\n")
    headers = rest.partition(b"\r\n\r\n")[0].lower()
    assert status_line.split()[1] in (b"200", b"400"), answer[:300]
    assert b"x-injected" not in headers
    assert b"abc" not in headers


def test_a_header_value_with_a_nul_byte_is_refused_not_crashed(gateway: GatewayServer) -> None:
    head = (
        b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
        b"authorization: Bearer " + ACME_KEY.encode() + b"\x00\r\n\r\n"
    )

    answer = raw_request(gateway, head)

    status = answer.split(b"\r\n", 1)[0].split()[1]
    assert status in (b"400", b"401"), answer[:300]
