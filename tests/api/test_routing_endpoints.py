"""POST /v1/route/explain, POST /v1/feedback and tier health, on a real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.feedback import FeedbackStore
from tests.support.gateway_server import (
    ACME_KEY,
    ADMIN_KEY,
    GLOBEX_KEY,
    TEST_CONFIG,
    GatewayServer,
    gateway_env,
)
from tests.support.mock_upstream import MockUpstream, Status

# The test config with the shipped classifier on, and health that trips after 2 failures.
CONFIG = TEST_CONFIG.replace(
    "  health: { failures: 1000 }\n",
    "  health: { failures: 2, cooldown_s: 300 }\n  classifier: { threshold: 0.5 }\n",
)
assert CONFIG != TEST_CONFIG

HARD = (
    "A store sells small boxes of 12 for $4 and large boxes of 75 for $20. What is the cheapest "
    "way to ship 1,245 items with no box partly empty? Show each step."
)


@pytest.fixture(scope="module")
def server(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    data_dir = tmp_path_factory.mktemp("routing-endpoints")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), CONFIG) as gw:
        yield gw


def post(
    server: GatewayServer, path: str, key: str | None, body: Any, **params: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{server.root_url}{path}", json=body, headers=headers, params=params, timeout=10
    )


def chat(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


# -- explain ------------------------------------------------------------------------------------


def test_explain_returns_the_decision_and_calls_no_model(
    server: GatewayServer, upstream: MockUpstream
) -> None:
    response = post(server, "/v1/route/explain", ACME_KEY, chat(HARD))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "route.explanation"
    assert body["tenant"] == "acme"
    assert body["route"] in ("small", "large")
    assert body["model"] == {"small": "mock-small", "large": "gpt-4o"}[body["route"]]
    assert 0.0 <= body["score"] <= 1.0
    assert body["threshold"] == 0.5
    assert body["top_features"] and all("name" in f for f in body["top_features"])
    assert any(r.startswith("classifier: score") for r in body["reasons"])
    assert body["features"]["prompt_tokens"] > 0
    assert upstream.history == [], "explain must not call any model"


def test_explain_agrees_with_the_real_request(
    server: GatewayServer, upstream: MockUpstream
) -> None:
    explained = post(server, "/v1/route/explain", ACME_KEY, chat(HARD)).json()
    answered = post(server, "/v1/chat/completions", ACME_KEY, chat(HARD))
    assert answered.status_code == 200
    assert answered.headers["x-switchboard-route"] == explained["route"]
    assert answered.headers["x-switchboard-difficulty"] == f"{explained['score']:.3f}"


def test_explain_shows_a_rule_decision(server: GatewayServer) -> None:
    body = post(server, "/v1/route/explain", ACME_KEY, chat("I want a refund")).json()
    assert body["route"] == "large"
    assert body["score"] is None
    assert body["reasons"] == ["rule 'sensitive': keyword 'refund'"]


def test_explain_with_the_admin_key_needs_a_tenant(server: GatewayServer) -> None:
    response = post(server, "/v1/route/explain", ADMIN_KEY, chat("hi"))
    assert response.status_code == 400
    assert "?tenant=NAME" in response.json()["error"]["message"]
    response = post(server, "/v1/route/explain", ADMIN_KEY, chat("hi"), tenant="nobody")
    assert response.status_code == 400
    assert "unknown tenant 'nobody'" in response.json()["error"]["message"]
    response = post(server, "/v1/route/explain", ADMIN_KEY, chat("hi"), tenant="globex")
    assert response.status_code == 200
    assert response.json()["tenant"] == "globex"


def test_explain_applies_the_tenants_model_restrictions(server: GatewayServer) -> None:
    body = {**chat("hi"), "model": "small-only"}
    response = post(server, "/v1/route/explain", GLOBEX_KEY, body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "auto"}, 400),
        ({"model": "auto", "messages": []}, 400),
        ("not an object", 400),
    ],
)
def test_explain_rejects_bad_bodies(server: GatewayServer, body: Any, status: int) -> None:
    response = post(server, "/v1/route/explain", ACME_KEY, body)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_explain_without_a_key_is_401(server: GatewayServer) -> None:
    assert post(server, "/v1/route/explain", None, chat("hi")).status_code == 401


# -- feedback -----------------------------------------------------------------------------------


def answered_request_id(server: GatewayServer, key: str = ACME_KEY) -> str:
    response = post(server, "/v1/chat/completions", key, chat("hello there"))
    assert response.status_code == 200
    return response.headers["x-switchboard-request-id"]


def test_feedback_is_stored_with_the_request(server: GatewayServer, upstream: MockUpstream) -> None:
    request_id = answered_request_id(server)
    response = post(
        server,
        "/v1/feedback",
        ACME_KEY,
        {"request_id": request_id, "verdict": "bad", "comment": "wrong parcel status"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"object": "feedback", "request_id": request_id, "verdict": "bad"}
    # A later verdict replaces the earlier one.
    post(server, "/v1/feedback", ACME_KEY, {"request_id": request_id, "verdict": "handoff"})
    store = FeedbackStore(Path(server.settings.ledger_path))
    try:
        mine = [f for f in store.for_tenant("acme") if f.request_id == request_id]
    finally:
        store.close()
    assert [(f.verdict, f.comment) for f in mine] == [("handoff", None)]


def test_feedback_on_another_tenants_request_is_not_found(
    server: GatewayServer, upstream: MockUpstream
) -> None:
    request_id = answered_request_id(server, ACME_KEY)
    response = post(
        server, "/v1/feedback", GLOBEX_KEY, {"request_id": request_id, "verdict": "bad"}
    )
    assert response.status_code == 404
    unknown = post(server, "/v1/feedback", GLOBEX_KEY, {"request_id": "nope", "verdict": "bad"})
    # Same answer whether the id exists for someone else or not at all: nothing leaks.
    assert unknown.status_code == 404
    assert response.json()["error"]["message"].replace(request_id, "X") == unknown.json()["error"][
        "message"
    ].replace("nope", "X")


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "x", "verdict": "meh"},
        {"verdict": "good"},
        {"request_id": "", "verdict": "good"},
        {"request_id": "x", "verdict": "good", "extra": 1},
        {"request_id": "x", "verdict": "good", "comment": "x" * 5000},
    ],
)
def test_feedback_rejects_bad_bodies(server: GatewayServer, body: dict[str, Any]) -> None:
    response = post(server, "/v1/feedback", ACME_KEY, body)
    assert response.status_code == 400
    assert "verdict" in response.json()["error"]["message"]


def test_feedback_needs_a_tenant_key(server: GatewayServer) -> None:
    assert (
        post(server, "/v1/feedback", None, {"request_id": "x", "verdict": "good"}).status_code
        == 401
    )
    assert (
        post(server, "/v1/feedback", ADMIN_KEY, {"request_id": "x", "verdict": "good"}).status_code
        == 401
    )


# -- health (last: it leaves the large tier marked unhealthy) --------------------------------------


def test_a_failing_tier_is_skipped_after_two_failures(
    server: GatewayServer, upstream: MockUpstream
) -> None:
    refund = chat("I want a refund")  # the `sensitive` rule sends it to large
    upstream.enqueue(Status(500), Status(500))
    assert post(server, "/v1/chat/completions", ACME_KEY, refund).status_code == 502
    assert post(server, "/v1/chat/completions", ACME_KEY, refund).status_code == 502
    response = post(server, "/v1/chat/completions", ACME_KEY, refund)
    assert response.status_code == 200
    assert response.headers["x-switchboard-route"] == "small"
    assert "large failing its health checks, skipped" in response.headers["x-switchboard-reason"]
    explained = post(server, "/v1/route/explain", ACME_KEY, refund).json()
    assert explained["unhealthy_tiers"] == ["large"]
    assert explained["route"] == "small"
