"""Masking and handoff wired into the pipeline, end to end through a real gateway.

The proof the issue asks for: during masked requests, everything the gateway writes (what the
upstream received, the ledger with request text on, every file of the data directory: SQLite
ledger and WAL, diskcache; Redis keys in shared mode; the logs at DEBUG; Prometheus text and
spans) is searched for the raw values, and none holds one, while the client gets them back.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import ConfigError, TelemetryConfig
from gateway.reports import SpendQuery, build_spend_report, render_spend_table
from gateway.telemetry import Telemetry
from gateway.timezones import TenantZones
from tests.conftest import all_records, ledger_record
from tests.support.gateway_server import (
    ACME_KEY,
    ADMIN_KEY,
    GLOBEX_KEY,
    TEST_CONFIG,
    GatewayServer,
    gateway_env,
    load_test_config,
)
from tests.support.mock_upstream import MockUpstream, Status
from tests.support.openai_spec import SpecValidator

HOLDING = "I'm passing you to a colleague, who will reply here shortly."

SAFETY_CONFIG = (
    TEST_CONFIG.replace(
        "    store_request_text: true\n",
        "    store_request_text: true\n"
        "    safety:\n"
        "      masking: { enabled: true, secret_env: ACME_MASK_SECRET }\n"
        "      handoff: { enabled: true, action: large }\n",
    )
    .replace(
        "    allow_pin: false\n",
        "    allow_pin: false\n"
        "    store_request_text: true\n"
        "    safety:\n"
        f'      handoff: {{ enabled: true, action: answer, answer: "{HOLDING}" }}\n',
    )
    # Personalised answers cached too, so the cache's entries are part of the search.
    .replace(
        "cache:\n  enabled: false\n",
        "cache:\n  enabled: true\n  admit_after: 1\n  personalised: true\n",
    )
)

PHONE = "13812345678"
EMAIL = "li.wei@example.com"
CARD = "4111 1111 1111 1111"
CN_ID = "11010519491231002X"
IBAN = "GB82 WEST 1234 5698 7654 32"
ADDRESS = "上海市徐汇区漕溪北路88号3号楼1201室"
DESK = "desk@shop.example"  # in the operator's system prompt: masked as well
RAW_VALUES = (PHONE, EMAIL, CARD, CN_ID, IBAN, ADDRESS, DESK)


def _forms(value: str) -> set[str]:
    """A value as written, and its other spellings (digits only, no spaces)."""
    forms = {value, value.replace(" ", "")}
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= 8:
        forms.add(digits)
    return forms


SEARCHED = sorted({form for value in RAW_VALUES for form in _forms(value)})

USER_TEXT = (
    f"Please update my profile: phone {PHONE}, email {EMAIL}, card {CARD}, "
    f"ID {CN_ID}, IBAN {IBAN}, 地址 {ADDRESS}."
)


def conversation(user_text: str = USER_TEXT) -> list[dict[str, Any]]:
    """System, user, an assistant tool call, its result, and the last user turn."""
    return [
        {"role": "system", "content": f"You are Shop's assistant. Escalations: {DESK}."},
        {"role": "user", "content": f"Hi, my number is {PHONE}."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "lookup_customer",
                        "arguments": json.dumps({"phone": PHONE}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"customer: {EMAIL}, card {CARD}"},
        {"role": "user", "content": user_text},
    ]


def chat(
    server: GatewayServer,
    messages: list[dict[str, Any]],
    *,
    key: str = ACME_KEY,
    model: str = "gpt-4o",
    **extra: Any,
) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions",
        json={"model": model, "messages": messages, **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def streamed_text(response: httpx.Response) -> str:
    text = []
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


def leaks(where: str, blob: str | bytes) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [f"{where}: {form!r}" for form in SEARCHED if form in text]


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    spans: InMemorySpanExporter,
) -> Iterator[GatewayServer]:
    data_dir = tmp_path_factory.mktemp("safety-data")
    env = gateway_env(mock_upstream.base_url, ACME_MASK_SECRET="acme-secret-" + "0" * 32)
    telemetry = Telemetry.from_config(TelemetryConfig(), span_exporter=spans)
    with GatewayServer(data_dir, env, SAFETY_CONFIG, telemetry=telemetry) as server:
        yield server


# --- the proof: no raw value anywhere the gateway writes ------------------------------------


def test_no_raw_value_reaches_the_upstream_ledger_logs_cache_or_telemetry(
    gateway: GatewayServer,
    upstream: MockUpstream,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    expected = "echo: " + USER_TEXT

    plain = chat(gateway, conversation())
    again = chat(gateway, conversation())  # a cache hit, restored from the masked entry
    streamed = chat(gateway, conversation(), stream=True, stream_options={"include_usage": True})

    # The client gets its values back, streamed or not, fresh or from the cache.
    assert plain.status_code == 200, plain.text
    assert plain.json()["choices"][0]["message"]["content"] == expected
    assert plain.headers["x-switchboard-masked"] == (
        "EMAIL=2,PHONE=1,CARD=1,CN_ID=1,IBAN=1,ADDRESS=1"
    )
    assert again.headers["x-switchboard-cache"] == "hit"
    assert again.json()["choices"][0]["message"]["content"] == expected
    assert streamed.headers["x-switchboard-route"] == "cache"
    assert streamed_text(streamed) == expected
    assert len(upstream.history) == 1

    # The search finds the values where they are meant to be: in the client's answer.
    answer = plain.json()["choices"][0]["message"]["content"]
    assert {v for v in RAW_VALUES if leaks("answer", answer) and v in answer} == set(RAW_VALUES) - {
        DESK
    }
    found: list[str] = []
    # 1. What left for the hosted model: placeholders only, consistently numbered.
    sent = upstream.history[0].json
    found += leaks("upstream body", json.dumps(sent, ensure_ascii=False))
    messages = sent["messages"]
    assert messages[0]["content"] == "You are Shop's assistant. Escalations: [EMAIL_1]."
    assert messages[1]["content"] == "Hi, my number is [PHONE_1]."
    assert json.loads(messages[2]["tool_calls"][0]["function"]["arguments"]) == {
        "phone": "[PHONE_1]"
    }
    assert messages[3]["content"] == "customer: [EMAIL_2], card [CARD_1]"
    assert "[CN_ID_1]" in messages[4]["content"] and "[ADDRESS_1]" in messages[4]["content"]
    # 2. The ledger, request text on: the masked text is kept.
    for response in (plain, again, streamed):
        record = ledger_record(gateway, response.headers["x-switchboard-request-id"])
        assert record.request_text is not None and "[PHONE_1]" in record.request_text
        found += leaks("ledger record", repr(record))
    # 3. Every file the gateway wrote: the SQLite ledger (and its WAL), the diskcache entries.
    gateway.switchboard.runtime.ledger.flush()
    data_dir = gateway.settings.data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.parent.name == "cache" for p in files)
    for path in files:
        found += leaks(str(path.relative_to(data_dir)), path.read_bytes())
    # 4. The logs, at DEBUG, of every logger.
    found += leaks("logs", "\n".join(r.getMessage() for r in caplog.records))
    # 5. Telemetry: the Prometheus page and the spans' attributes.
    metrics = httpx.get(gateway.root_url + "/metrics")
    assert metrics.status_code == 200
    found += leaks("/metrics", metrics.text)
    assert spans.get_finished_spans()
    for span in spans.get_finished_spans():
        found += leaks(f"span {span.name}", json.dumps(dict(span.attributes or {}), default=str))

    assert found == []


def test_two_requests_about_different_phone_numbers_never_share_a_cached_answer(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    first = chat(gateway, [{"role": "user", "content": "call me back on 13912345678 please"}])
    other = chat(gateway, [{"role": "user", "content": "call me back on 13712345678 please"}])
    same = chat(gateway, [{"role": "user", "content": "call me back on 13912345678 please"}])

    assert [r.headers["x-switchboard-cache"] for r in (first, other, same)] == [
        "miss",
        "miss",
        "hit",
    ]
    assert other.json()["choices"][0]["message"]["content"].endswith("13712345678 please")
    assert same.json()["choices"][0]["message"]["content"].endswith("13912345678 please")
    # Both left as the same masked text: only the keyed hashes told them apart.
    assert [h.json["messages"][0]["content"] for h in upstream.history] == [
        "call me back on [PHONE_1] please"
    ] * 2


def test_a_streamed_masked_answer_is_restored(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    text = f"stream test: write to {EMAIL} or call +86 138 1234 5678"
    response = chat(gateway, [{"role": "user", "content": text}], stream=True)

    assert response.status_code == 200
    assert streamed_text(response) == "echo: " + text
    assert upstream.history[0].json["messages"][0]["content"] == (
        "stream test: write to [EMAIL_1] or call [PHONE_1]"
    )
    assert response.headers["x-switchboard-masked"] == "EMAIL=1,PHONE=1"


def test_a_tenant_without_masking_sends_its_text_as_it_is(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    response = chat(gateway, [{"role": "user", "content": f"my number is {PHONE}"}], key=GLOBEX_KEY)

    assert response.status_code == 200
    assert upstream.history[0].json["messages"][0]["content"] == f"my number is {PHONE}"
    assert "x-switchboard-masked" not in response.headers


# --- bad input -------------------------------------------------------------------------------


def test_empty_messages_are_refused_as_before(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    response = chat(gateway, [])
    empty = chat(gateway, [{"role": "user", "content": ""}])

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert empty.status_code == 200
    assert empty.json()["choices"][0]["message"]["content"] == "echo: "


def test_mixed_languages_round_trip(gateway: GatewayServer, upstream: MockUpstream) -> None:
    text = f"你好，我的手机号是{PHONE}，email 是 {EMAIL}, please 帮我改一下地址：{ADDRESS}"

    response = chat(gateway, [{"role": "user", "content": text}])

    assert response.json()["choices"][0]["message"]["content"] == "echo: " + text
    assert upstream.history[0].json["messages"][0]["content"] == (
        "你好，我的手机号是[PHONE_1]，email 是 [EMAIL_1], please 帮我改一下地址：[ADDRESS_1]"
    )


def test_a_very_long_message_is_masked_throughout(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    numbers = [f"139{n:08d}" for n in range(1, 41)]
    text = " ".join(
        f"line {i}: please call {number} about my order." for i, number in enumerate(numbers)
    )
    text = (text + " ") * 2 + "x" * 20_000

    response = chat(gateway, [{"role": "user", "content": text}])

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: " + text
    sent = upstream.history[0].json["messages"][0]["content"]
    assert not any(number in sent for number in numbers)
    assert "[PHONE_40]" in sent and "[PHONE_41]" not in sent  # the same number, one placeholder
    assert response.headers["x-switchboard-masked"] == "PHONE=40"


def test_a_placeholder_the_customer_typed_survives_unchanged(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    text = f"Why does my SMS say [PHONE_1] instead of {PHONE}?"

    response = chat(gateway, [{"role": "user", "content": text}])

    assert upstream.history[0].json["messages"][0]["content"] == (
        "Why does my SMS say [PHONE_1] instead of [PHONE_2]?"
    )
    assert response.json()["choices"][0]["message"]["content"] == "echo: " + text


def test_image_parts_are_left_alone(gateway: GatewayServer, upstream: MockUpstream) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    content = [{"type": "text", "text": f"the parcel for {PHONE} arrived broken"}, image]

    response = chat(gateway, [{"role": "user", "content": content}])

    assert response.status_code == 200, response.text
    sent = upstream.history[0].json["messages"][0]["content"]
    assert sent == [{"type": "text", "text": "the parcel for [PHONE_1] arrived broken"}, image]
    assert response.json()["choices"][0]["message"]["content"] == (
        f"echo: the parcel for {PHONE} arrived broken"
    )


# --- handoff ---------------------------------------------------------------------------------


def test_a_legal_threat_goes_to_the_large_tier_with_the_header_and_ledger_reason(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    response = chat(
        gateway,
        [{"role": "user", "content": "where is my parcel? otherwise my lawyer will sue you"}],
        model="auto",
    )

    assert response.status_code == 200
    assert response.headers["x-switchboard-handoff"] == "legal_threat"
    assert response.headers["x-switchboard-route"] == "large"
    assert "handoff: legal_threat" in response.headers["x-switchboard-reason"]
    assert response.headers["x-switchboard-cache"] == "bypass"
    assert upstream.history[0].json["model"] == "gpt-4o"
    record = ledger_record(gateway, response.headers["x-switchboard-request-id"])
    assert (record.route, record.handoff) == ("large", "legal_threat")


def test_a_handoff_is_read_before_the_cache_and_answered_with_the_holding_text(
    gateway: GatewayServer, upstream: MockUpstream, spec: SpecValidator
) -> None:
    text = "转人工，我的快递到哪了"
    plain = chat(gateway, [{"role": "user", "content": text}], key=GLOBEX_KEY, model="auto")
    streamed = chat(
        gateway,
        [{"role": "user", "content": text}],
        key=GLOBEX_KEY,
        model="auto",
        stream=True,
        stream_options={"include_usage": True},
    )

    assert upstream.history == []
    assert plain.status_code == 200
    spec.validate("CreateChatCompletionResponse", plain.json())
    assert plain.json()["choices"][0]["message"]["content"] == HOLDING
    assert plain.headers["x-switchboard-handoff"] == "human_request"
    assert plain.headers["x-switchboard-route"] == "handoff"
    assert plain.headers["x-switchboard-cost-usd"] == "0.000000"
    chunks = spec.validate_sse(streamed.text)
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == HOLDING
    )
    record = ledger_record(gateway, plain.headers["x-switchboard-request-id"])
    assert (record.route, record.handoff, record.cost_micros) == ("handoff", "human_request", 0)


def test_handoffs_are_counted_in_the_spend_report(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    chat(
        gateway,
        [{"role": "user", "content": "I want to talk to a human"}],
        key=GLOBEX_KEY,
        model="auto",
    )
    gateway.switchboard.runtime.ledger.flush()

    report = httpx.get(
        gateway.root_url + "/admin/reports/spend",
        params={"tenant": "globex", "group_by": "tier"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )

    assert report.status_code == 200, report.text
    rows = {row["tier"]: row for row in report.json()["rows"]}
    assert rows["handoff"]["handoffs"] >= 1 and rows["handoff"]["cost_micros"] == 0
    assert report.json()["total"]["handoffs"] == sum(r["handoffs"] for r in rows.values())
    # Per reason too, from the same raw records (the reasons add up to the total).
    reasons = report.json()["handoff_reasons"]
    assert reasons["human_request"] >= 1
    assert sum(reasons.values()) == report.json()["total"]["handoffs"]


def test_the_text_report_names_the_handoff_reasons(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    chat(gateway, [{"role": "user", "content": "转人工"}], key=GLOBEX_KEY, model="auto")
    gateway.switchboard.runtime.ledger.flush()

    # What `gateway report` prints: the table, then one line per extra figure.
    report = build_spend_report(
        gateway.switchboard.runtime.ledger, SpendQuery(tenant="globex"), TenantZones()
    )
    text = render_spend_table(report)

    line = next(x for x in text.splitlines() if x.startswith("handoffs by reason: "))
    assert "human_request" in line


def test_the_handoff_header_is_on_errors_too(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Status(500))

    response = chat(
        gateway,
        [{"role": "user", "content": "this is useless, get me a real person"}],
        model="auto",
    )

    assert response.status_code >= 500
    assert response.headers["x-switchboard-handoff"] in ("human_request", "anger")
    record = ledger_record(gateway, response.headers["x-switchboard-request-id"])
    assert record.handoff == response.headers["x-switchboard-handoff"]


# --- config ----------------------------------------------------------------------------------


def test_a_named_masking_secret_that_is_unset_fails_at_start(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    env = gateway_env(mock_upstream.base_url)  # no ACME_MASK_SECRET

    with pytest.raises(ConfigError, match="ACME_MASK_SECRET is not set"):
        GatewayServer(tmp_path, env, SAFETY_CONFIG)
    assert load_test_config(env, SAFETY_CONFIG)  # the file itself is valid


# --- shared mode: Redis ----------------------------------------------------------------------


def test_with_state_redis_no_raw_value_is_in_any_redis_key(
    mock_upstream: MockUpstream, upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = "redis://127.0.0.1:6379/15"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"test-safety-{uuid.uuid4().hex[:8]}:"
    config = SAFETY_CONFIG + f'state: redis\nredis:\n  url: {url}\n  key_prefix: "{prefix}"\n'
    env = gateway_env(mock_upstream.base_url, ACME_MASK_SECRET="s" * 40)
    try:
        with GatewayServer(tmp_path_factory.mktemp("safety-redis"), env, config) as server:
            first = chat(server, conversation())
            second = chat(server, conversation())
            server.switchboard.runtime.ledger.flush()
            assert second.headers["x-switchboard-cache"] == "hit"
            assert second.json()["choices"][0]["message"]["content"] == "echo: " + USER_TEXT
        assert first.status_code == 200
        keys = list(client.scan_iter(match=f"{prefix}*"))
        assert any(b":cache:" in k for k in keys)
        found: list[str] = []
        for key in keys:
            kind = client.type(key)
            if kind == b"string":
                value: Any = client.get(key)
            elif kind == b"stream":
                value = client.xrange(key)
            elif kind == b"hash":
                value = client.hgetall(key)
            elif kind == b"zset":
                value = client.zrange(key, 0, -1)
            elif kind == b"list":
                value = client.lrange(key, 0, -1)
            elif kind == b"set":
                value = client.smembers(key)
            else:
                value = b""
            blob = value if isinstance(value, bytes) else repr(value).encode()
            if not isinstance(value, bytes):
                # repr escapes non-ASCII bytes: decode every bytes item it holds as well
                blob += b"".join(_bytes_in(value))
            found += leaks(key.decode(), blob)
        assert found == []
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def _bytes_in(value: Any) -> Iterator[bytes]:
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _bytes_in(k)
            yield from _bytes_in(v)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _bytes_in(item)


def test_every_record_of_this_module_kept_its_text_masked(gateway: GatewayServer) -> None:
    texts = [r.request_text for r in all_records(gateway) if r.tenant == "acme"]
    assert texts
    assert [t for t in texts if t and any(form in t for form in SEARCHED)] == []


def test_route_explain_shows_the_handoff_and_its_route(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    def explain(key: str, text: str) -> dict[str, Any]:
        response = httpx.post(
            gateway.base_url + "/route/explain",
            json={"model": "auto", "messages": [{"role": "user", "content": text}]},
            headers={"authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    threat = explain(ACME_KEY, "I'm contacting my lawyer about this order")
    holding = explain(GLOBEX_KEY, "转人工")
    plain = explain(ACME_KEY, "how do I return shoes")

    assert (threat["handoff"], threat["route"], threat["holding_answer"]) == (
        "legal_threat",
        "large",
        False,
    )
    assert (holding["handoff"], holding["holding_answer"]) == ("human_request", True)
    assert (plain["handoff"], plain["route"]) == (None, "small")
    assert upstream.history == []


def test_a_holding_answer_of_a_masking_tenant_keeps_its_ledger_text_masked(
    mock_upstream: MockUpstream, upstream: MockUpstream, tmp_path: Path
) -> None:
    config = SAFETY_CONFIG.replace(
        "    safety:\n      handoff: { enabled: true, action: answer",
        "    safety:\n      masking: { enabled: true }\n"
        "      handoff: { enabled: true, action: answer",
    )
    assert config != SAFETY_CONFIG
    env = gateway_env(mock_upstream.base_url, ACME_MASK_SECRET="s" * 40)
    with GatewayServer(tmp_path, env, config) as server:
        response = chat(
            server, [{"role": "user", "content": f"转人工，我的电话是{PHONE}"}], key=GLOBEX_KEY
        )
        record = ledger_record(server, response.headers["x-switchboard-request-id"])

    assert response.headers["x-switchboard-route"] == "handoff"
    assert record.request_text == "转人工，我的电话是[PHONE_1]"


def test_a_chinese_intent_name_is_percent_encoded_in_the_header(
    mock_upstream: MockUpstream, upstream: MockUpstream, tmp_path: Path
) -> None:
    config = SAFETY_CONFIG.replace(
        f'      handoff: {{ enabled: true, action: answer, answer: "{HOLDING}" }}\n',
        '      handoff: { enabled: true, intents: { 退款纠纷: ["拒绝 ... 退款"] } }\n',
    )
    assert config != SAFETY_CONFIG
    env = gateway_env(mock_upstream.base_url, ACME_MASK_SECRET="s" * 40)
    with GatewayServer(tmp_path, env, config) as server:
        response = chat(
            server, [{"role": "user", "content": "你们拒绝了我的退款申请"}], key=GLOBEX_KEY
        )
        record = ledger_record(server, response.headers["x-switchboard-request-id"])

    assert response.status_code == 200
    assert response.headers["x-switchboard-handoff"] == "intent:" + quote("退款纠纷")
    assert record.handoff == "intent:退款纠纷"
    assert response.headers["x-switchboard-route"] == "large"  # action none: routed as usual
