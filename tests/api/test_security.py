"""Security through real servers: tenants stay apart, keys never leak, the config alone names the
addresses the gateway calls, CORS answers only configured origins, rate limits hold across
processes.

Surfaces tested elsewhere and not repeated here (docs/reliability.md lists them all): the exact
cache (tests/api/test_cache.py), the models list (tests/api/test_models_health_admin.py),
spend reports read with another tenant's name (tests/api/test_reports_spend.py), feedback on
another tenant's request (tests/api/test_routing_endpoints.py), ledger export
(tests/cli/test_report_cli.py).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import TelemetryConfig
from gateway.telemetry import Telemetry
from gateway.tiers.litellm_provider import LitellmTier
from tests.support.budget_config import budget_config, redis_prefix, redis_state
from tests.support.gateway_server import (
    ACME_KEY,
    ADMIN_KEY,
    GLOBEX_KEY,
    TEST_CONFIG,
    UPSTREAM_KEY,
    GatewayServer,
    gateway_env,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.served import serving

HELLO = [{"role": "user", "content": "where is my parcel"}]
# A key one character away from acme's: a near miss must not be logged either.
NEAR_MISS_KEY = ACME_KEY + "X"
SECRETS = {
    "acme key": ACME_KEY,
    "globex key": GLOBEX_KEY,
    "admin key": ADMIN_KEY,
    "near-miss key": NEAR_MISS_KEY,
    "upstream key": UPSTREAM_KEY,
}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    spans: InMemorySpanExporter,
) -> Iterator[GatewayServer]:
    data_dir = tmp_path_factory.mktemp("security-data")
    telemetry = Telemetry.from_config(TelemetryConfig(), span_exporter=spans)
    env = gateway_env(mock_upstream.base_url)
    with GatewayServer(data_dir, env, telemetry=telemetry) as server:
        yield server


# --------------------------------------------------------------------------- tenant isolation


def test_explain_with_a_tenant_key_ignores_a_tenant_parameter(gateway: GatewayServer) -> None:
    url = gateway.base_url + "/route/explain"
    as_acme = {"model": "small-only", "messages": HELLO}  # a model only acme may use

    mine = httpx.post(url, params={"tenant": "acme"}, json=as_acme, headers=bearer(GLOBEX_KEY))
    plain = httpx.post(
        url,
        params={"tenant": "acme"},
        json={"model": "auto", "messages": HELLO},
        headers=bearer(GLOBEX_KEY),
    )

    assert mine.status_code == 404 and mine.json()["error"]["code"] == "model_not_found"
    assert plain.status_code == 200 and plain.json()["tenant"] == "globex"


def test_a_tenants_html_report_shows_nothing_of_another_tenant(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    body = {"model": "auto", "messages": HELLO, "user": "acme-customer-7731"}
    answer = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=bearer(ACME_KEY))
    assert answer.status_code == 200

    own = httpx.get(gateway.root_url + "/admin/reports", headers=bearer(GLOBEX_KEY), timeout=30)
    admin = httpx.get(gateway.root_url + "/admin/reports", headers=bearer(ADMIN_KEY), timeout=30)

    assert own.status_code == 200 and admin.status_code == 200
    assert "acme" in admin.text  # the admin's page does show it: the search below can fail
    assert "acme" not in own.text


def admin_operations(gateway: GatewayServer) -> list[tuple[str, str]]:
    """Every (method, path) under /admin in the published document, path parameters filled."""
    document = httpx.get(gateway.root_url + "/schema/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        if path.startswith("/admin"):
            filled = path.replace("{tenant}", "acme").replace("{entry_id}", "x")
            found += [(method.upper(), filled) for method in item]
    return found


# Tenant keys may read their own spend here; every other /admin operation is the admin's alone.
TENANT_READABLE = {"/admin/reports/spend", "/admin/reports"}


def test_every_admin_operation_refuses_no_key_a_wrong_key_and_tenant_keys(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    operations = admin_operations(gateway)
    assert ("GET", "/admin/report") in operations and len(operations) >= 3

    for method, path in operations:
        url = gateway.root_url + path
        for headers in ({}, bearer(NEAR_MISS_KEY), {"api-key": "sk-nobody"}):
            response = httpx.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "invalid_api_key"
        if path not in TENANT_READABLE:
            response = httpx.request(method, url, headers=bearer(ACME_KEY), json={})
            assert response.status_code in (401, 403), (method, path, response.text)
    assert upstream.history == []


# --------------------------------------------------------------------------- keys


def leaks(where: str, text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [f"{name} in {where}" for name, key in SECRETS.items() if key.encode() in data]


def test_no_key_reaches_logs_ledger_files_telemetry_or_answers(
    gateway: GatewayServer,
    upstream: MockUpstream,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    chat = gateway.base_url + "/chat/completions"
    answers = [
        httpx.post(chat, json={"model": "auto", "messages": HELLO}, headers=bearer(ACME_KEY)),
        httpx.post(
            chat,
            json={"model": "auto", "messages": HELLO, "stream": True},
            headers={"api-key": GLOBEX_KEY},
        ),
        httpx.post(chat, json={"model": "gpt-7", "messages": HELLO}, headers=bearer(ACME_KEY)),
        httpx.post(chat, json={"model": "auto", "messages": HELLO}, headers=bearer(NEAR_MISS_KEY)),
        httpx.post(chat, content=b"{broken", headers=bearer(ACME_KEY)),
        httpx.post(
            gateway.base_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": "parcel"},
            headers=bearer(ACME_KEY),
        ),
        httpx.post(
            gateway.base_url + "/route/explain",
            params={"tenant": "acme"},
            json={"model": "auto", "messages": HELLO},
            headers=bearer(ADMIN_KEY),
        ),
        httpx.get(gateway.root_url + "/admin/reports/spend", headers=bearer(ADMIN_KEY)),
        httpx.get(gateway.root_url + "/admin/report", headers=bearer(GLOBEX_KEY)),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 401, 400, 200, 200, 200, 401]

    # The search finds a key where it is meant to be: in what the client sent.
    assert leaks("request", answers[0].request.headers["authorization"]) == ["acme key in request"]
    found: list[str] = []
    for answer in answers:
        found += leaks(f"answer to {answer.request.url.path}", answer.content)
        found += leaks("response headers", json.dumps(dict(answer.headers)))
    found += leaks("upstream requests", json.dumps([r.json for r in upstream.history]))
    # The SQLite ledger (and its WAL), the budget store, generated keys, caches: every file.
    gateway.switchboard.runtime.ledger.flush()
    data_dir = gateway.settings.data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("ledger") for p in files)
    for path in files:
        found += leaks(str(path.relative_to(data_dir)), path.read_bytes())
    # Every log record of every logger at DEBUG, with its exception text.
    for record in caplog.records:
        found += leaks(f"log {record.name}", record.getMessage() + str(record.exc_text or ""))
    found += leaks("/metrics", httpx.get(gateway.root_url + "/metrics").text)
    finished = spans.get_finished_spans()
    assert finished
    for span in finished:
        found += leaks(f"span {span.name}", span.to_json())

    assert found == []


# --------------------------------------------------------------------------- upstream addresses


class Trap:
    """A TCP listener on 127.0.0.1 that counts the connections it is sent (it should get none)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def __enter__(self) -> Trap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    with Trap() as listener:
        yield listener


def test_the_trap_counts_a_connection(trap: Trap) -> None:
    socket.create_connection(("127.0.0.1", trap.port), timeout=5).close()
    deadline = time.monotonic() + 10
    while trap.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert trap.connections == 1


def test_no_body_field_or_header_can_choose_the_upstream_address(
    gateway: GatewayServer, upstream: MockUpstream, trap: Trap
) -> None:
    address = {
        "api_base": trap.url,
        "base_url": trap.url,
        "api_key": "sk-attacker",
        "custom_llm_provider": "openai",
        "extra_body": {"api_base": trap.url, "base_url": trap.url},
        "extra_headers": {"host": f"127.0.0.1:{trap.port}"},
    }
    headers = {
        **bearer(ACME_KEY),
        "x-forwarded-host": f"127.0.0.1:{trap.port}",
        "x-forwarded-proto": "http",
        "forwarded": f"host=127.0.0.1:{trap.port}",
        "x-original-url": trap.url,
        "x-upstream": trap.url,
    }
    chat = {"model": "auto", "messages": HELLO, **address}

    answers = [
        httpx.post(gateway.base_url + "/chat/completions", json=chat, headers=headers),
        httpx.post(
            gateway.base_url + "/chat/completions", json={**chat, "stream": True}, headers=headers
        ),
        httpx.post(
            gateway.base_url + "/completions",
            json={"model": "auto", "prompt": "where is my parcel", **address},
            headers=headers,
        ),
        httpx.post(
            gateway.base_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": "parcel", **address},
            headers=headers,
        ),
    ]

    assert [a.status_code for a in answers] == [200, 200, 200, 200], [a.text for a in answers]
    assert len(upstream.history) == 4  # the configured upstream got every call ...
    assert trap.connections == 0  # ... and the address the client named got none
    # The upstream's own key went out, never the client's.
    assert all(r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}" for r in upstream.history)


def test_the_litellm_tier_takes_no_address_or_key_from_the_body() -> None:
    tier = LitellmTier(
        name="large",
        model="anthropic/claude-haiku-4-5",
        api_key="sk-configured",
        api_base=None,
        timeout_s=5.0,
    )
    body = {
        "model": "x",
        "messages": HELLO,
        "temperature": 0.2,
        "api_base": "http://127.0.0.1:9/v1",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-attacker",
        "extra_body": {"api_base": "http://127.0.0.1:9/v1"},
        "extra_headers": {"x-evil": "1"},
        "custom_llm_provider": "openai",
    }

    arguments = tier._arguments(body, stream=False)

    assert arguments["api_key"] == "sk-configured"
    assert "api_base" not in arguments and "base_url" not in arguments
    assert not {"extra_body", "extra_headers", "custom_llm_provider"} & set(arguments)
    assert arguments["temperature"] == 0.2  # the allow-list does forward what it names


# --------------------------------------------------------------------------- CORS


@pytest.fixture(scope="module")
def gateway_without_cors(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    config = TEST_CONFIG.replace('  cors_origins: ["https://shop.example"]\n', "")
    assert "cors_origins" not in config
    data_dir = tmp_path_factory.mktemp("no-cors-data")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), config) as server:
        yield server


def preflight(gateway: GatewayServer, origin: str) -> httpx.Response:
    return httpx.options(
        gateway.base_url + "/chat/completions",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-stainless-os",
        },
    )


@pytest.mark.parametrize("origin", ["https://shop.example", "https://evil.example", "null"])
def test_by_default_no_origin_gets_a_cors_answer(
    gateway_without_cors: GatewayServer, upstream: MockUpstream, origin: str
) -> None:
    answer = preflight(gateway_without_cors, origin)
    post = httpx.post(
        gateway_without_cors.base_url + "/chat/completions",
        json={"model": "auto", "messages": HELLO},
        headers={**bearer(ACME_KEY), "origin": origin},
    )

    assert post.status_code == 200
    for response in (answer, post):
        assert not [h for h in response.headers if h.startswith("access-control-")]


def test_a_configured_origin_gets_cors_on_the_answer_and_another_origin_does_not(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    def ask(origin: str) -> httpx.Response:
        return httpx.post(
            gateway.base_url + "/chat/completions",
            json={"model": "auto", "messages": HELLO},
            headers={**bearer(ACME_KEY), "origin": origin},
        )

    allowed, other = ask("https://shop.example"), ask("https://shop.example.evil.example")

    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    exposed = allowed.headers["access-control-expose-headers"].lower()
    assert "x-switchboard-request-id" in exposed and "x-switchboard-cost-usd" in exposed
    assert other.headers.get("access-control-allow-origin") not in (
        "*",
        "https://shop.example.evil.example",
    )
    evil_preflight = preflight(gateway, "https://shop.example.evil.example")
    assert evil_preflight.headers.get("access-control-allow-origin") != (
        "https://shop.example.evil.example"
    )


# --------------------------------------------------------------------------- rate limits


RATED_KEY = "sk-test-rated-0123456789"
SLOW_START = {"healthy_within_s": 60.0}
PER_MINUTE = 6
RATED = f"""  rated:
    keys: [{{ env: RATED_KEY }}]
    cache: false
    rate_limits: {{ per_tenant: {{ requests_per_minute: {PER_MINUTE} }} }}
"""


def test_a_rate_limit_holds_across_two_gateway_processes_sharing_redis(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        **gateway_env(upstream.base_url, RATED_KEY=RATED_KEY),
    }
    with redis_prefix() as prefix:
        path = tmp_path / "rated.yaml"
        path.write_text(budget_config(RATED, extra=redis_state(prefix)), "utf-8")
        with (
            # Two interpreters importing at once on a busy machine: give start-up time (a hang
            # guard, not a speed check).
            serving(tmp_path / "a", tmp_path / "a.log", env, config=path, **SLOW_START) as first,
            serving(tmp_path / "b", tmp_path / "b.log", env, config=path, **SLOW_START) as second,
        ):
            # The window is the calendar minute: start early in one, so the burst fits in it.
            if time.time() % 60 > 40:
                time.sleep(61 - time.time() % 60)
            outcomes: list[tuple[int, str | None]] = []
            for i in range(3 * PER_MINUTE):
                served = (first, second)[i % 2]
                with openai.OpenAI(
                    base_url=served.url + "/v1", api_key=RATED_KEY, max_retries=0
                ) as client:
                    try:
                        client.chat.completions.create(model="auto", messages=HELLO, max_tokens=4)  # type: ignore[arg-type]
                        outcomes.append((200, None))
                    except openai.RateLimitError as exc:
                        assert int(exc.response.headers["retry-after"]) >= 1
                        outcomes.append((429, exc.code))

    counts = Counter(outcomes)
    assert counts == {(200, None): PER_MINUTE, (429, "rate_limit_exceeded"): 2 * PER_MINUTE}
    assert len(upstream.history) == PER_MINUTE
