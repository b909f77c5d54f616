"""schemathesis against the OpenAPI document the gateway publishes, through a real server.

Every operation in ``/schema/openapi.json`` gets valid and invalid requests generated from its
schema (bodies, query strings, path parameters), sent with a tenant key (the admin key for
``/admin``) to the gateway on a real port, whose only upstream is the local mock. Two properties
must hold for every answer: no 5xx, and every error is OpenAI's error body with the request id.

Bounded and repeatable: a fixed number of examples per operation, hypothesis derandomized (the
seed comes from the test's name), no example database written, nothing contacted beyond
127.0.0.1.
"""

from __future__ import annotations

import json
import zlib

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, BaseSchema, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.openapi import from_url

from tests.support.gateway_server import ACME_KEY, ADMIN_KEY, GatewayServer
from tests.support.mock_upstream import MockUpstream

# Per operation and generation mode (valid, invalid): 16 operations x 2 x 25 cases, about 530
# requests after hypothesis drops duplicates, took 37 s on two heavily shared cores
# (docs/reliability.md).
EXAMPLES = 25
SERVED_MODEL = "auto"


def load_published(gateway: GatewayServer) -> BaseSchema:
    """The document as a client reads it, loaded by schemathesis, requests aimed at the gateway."""
    config = schemathesis.Config.from_dict({"base-url": gateway.root_url, "request-timeout": 30})
    return from_url(gateway.root_url + "/schema/openapi.json", config=config, timeout=10)


def openai_error_body(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 4xx is ``{"error": {"message", "type", "param", "code"}}`` with the request id header."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(
            f"{response.status_code} body is not JSON: {response.content[:200]!r}"
        ) from exc
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and error["type"], body
    assert error["param"] is None or isinstance(error["param"], str), body
    assert error["code"] is None or isinstance(error["code"], str), body
    assert response.headers.get("x-switchboard-request-id"), "errors carry the request id too"
    return None


def _aim(case: Case) -> None:
    # A random model name is a 404 before routing. Half the valid-looking bodies name a served
    # model instead (chosen by the body's own hash: deterministic), so routing, budgets, the
    # ledger and the upstream call get fuzzed too.
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        if zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode()) % 2 == 0:
            body["model"] = SERVED_MODEL


def check_operation(operation: APIOperation, mode: GenerationMode) -> None:
    """``EXAMPLES`` generated requests for one operation, each sent and checked."""
    key = ADMIN_KEY if operation.path.startswith("/admin") else ACME_KEY

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same cases on every run
        database=None,  # and no .hypothesis/ folder in the work tree
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking loop on a 2-core CI
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Case) -> None:
        _aim(case)
        case.call_and_validate(
            headers={"authorization": f"Bearer {key}"},
            checks=[not_a_server_error, openai_error_body],
        )

    try:
        send()
    except Unsatisfiable:
        # An operation without a body or parameters has nothing to make invalid.
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_generated_requests_never_get_a_5xx_and_errors_are_openai_errors(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    published = load_published(gateway)
    operations = [result.ok() for result in published.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            check_operation(operation, mode)


def test_the_document_describes_the_chat_body(gateway: GatewayServer) -> None:
    document = httpx.get(gateway.root_url + "/schema/openapi.json", timeout=10).json()

    operation = document["paths"]["/v1/chat/completions"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "messages"]
    message = body["properties"]["messages"]["items"]
    assert "user" in message["properties"]["role"]["enum"]
    error = operation["responses"]["default"]["content"]["application/json"]["schema"]
    assert error["properties"]["error"]["required"] == ["message", "type", "param", "code"]
