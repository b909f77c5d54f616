"""Approved answers and the semantic cache in the request pipeline, end to end: the official
openai client against the gateway on a real port, a mock upstream for the hosted tiers.

One gateway for the module: tenant acme has approved answers (the shipped example file with one
intent renamed to Chinese), the semantic cache (entities allowed, compared by keyed hash) and
masking; tenant globex has the semantic cache only. The exact cache is on (stores at once).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import pytest

from gateway.answers.file import load_answers
from gateway.answers.training import Example, train
from tests.conftest import ledger_record
from tests.support.gateway_server import (
    ACME_KEY,
    ADMIN_KEY,
    GLOBEX_KEY,
    TEST_CONFIG,
    GatewayServer,
    gateway_env,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.openai_spec import SpecValidator

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "answers" / "example.jsonl"
SUPPORT_HOURS = "9:00-18:00 CET"
TRACKING = "https://shop.example/track"

LAYERS_CONFIG = (
    TEST_CONFIG.replace(
        "    store_request_text: true\n",
        "    store_request_text: true\n"
        "    answers:\n"
        "      file: ${ANSWERS_FILE}\n"
        "      model: ${ANSWERS_MODEL}\n"
        f'      values: {{ support_hours: "{SUPPORT_HOURS}", tracking_url: "{TRACKING}" }}\n'
        "    semantic_cache: { enabled: true, personalised: true, "
        "secret_env: ACME_SEMANTIC_SECRET }\n"
        "    safety:\n"
        "      masking: { enabled: true, secret_env: ACME_MASK_SECRET }\n"
        "      handoff: { enabled: true, action: none }\n",
    )
    .replace(
        "    allow_pin: false\n",
        "    allow_pin: false\n    semantic_cache: { enabled: true, personalised: true }\n",
    )
    .replace("cache:\n  enabled: false\n", "cache:\n  enabled: true\n  admit_after: 1\n")
)

PHONE = "13812345678"
EMAIL = "li.wei@example.com"


@pytest.fixture(scope="module")
def answers_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example answers file with ``invoice`` renamed ``开发票``, and its trained matcher."""
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("answers")
    path = folder / "acme.jsonl"
    path.write_text(
        EXAMPLE.read_text("utf-8").replace('"intent": "invoice"', '"intent": "开发票"'), "utf-8"
    )
    model = train([Example(t, i) for t, i in load_answers(path).examples()])
    model_path = folder / "acme.npz"
    model.save(model_path)
    return path, model_path


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    answers_files: tuple[Path, Path],
) -> Iterator[GatewayServer]:
    assert LAYERS_CONFIG.count("semantic_cache") == 2 and "admit_after: 1" in LAYERS_CONFIG
    env = gateway_env(
        mock_upstream.base_url,
        ANSWERS_FILE=str(answers_files[0]),
        ANSWERS_MODEL=str(answers_files[1]),
        ACME_SEMANTIC_SECRET="acme-semantic-" + "1" * 32,
        ACME_MASK_SECRET="acme-mask-" + "2" * 32,
    )
    with GatewayServer(tmp_path_factory.mktemp("layers-data"), env, LAYERS_CONFIG) as server:
        yield server


def _client(gateway: GatewayServer, key: str = ACME_KEY) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.base_url, api_key=key, max_retries=0, _strict_response_validation=True
    )


def ask(
    gateway: GatewayServer, text: str, *, key: str = ACME_KEY, model: str = "auto"
) -> tuple[str, dict[str, str]]:
    """One question through the openai client: the answer's text and the response headers."""
    with _client(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}]
        )
        completion = raw.parse()
    return completion.choices[0].message.content or "", dict(raw.headers)


# Each test asks about its own made-up product, so no other test's entry can answer it (the
# gateway is shared by the module). Fixed names, not random ones: every question here was
# checked to make the example matcher abstain, whatever the name, and a random name could sway
# it (a code with a digit is also an entity, so the request would be personalised).


def admin(method: str, gateway: GatewayServer, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method,
        gateway.root_url + path,
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
        **kw,
    )


# --- approved answers --------------------------------------------------------------------------


def test_an_approved_answer_is_served_in_english_without_a_model_at_cost_zero(
    gateway: GatewayServer, upstream: MockUpstream, answers_files: tuple[Path, Path]
) -> None:
    text, headers = ask(gateway, "Where is my parcel right now?")

    approved = load_answers(answers_files[0]).intents["track_order"].answer
    # The configured value is filled in; {order_id} is the bot's to fill.
    assert text == approved.replace("{tracking_url}", TRACKING)
    assert "{order_id}" in text
    assert upstream.history == []
    assert headers["x-switchboard-route"] == "cache"
    assert headers["x-switchboard-cache-layer"] == "answers"
    assert headers["x-switchboard-intent"] == "track_order"
    assert headers["x-switchboard-placeholders"] == "order_id"
    assert headers["x-switchboard-cost-usd"] == "0.000000"
    record = ledger_record(gateway, headers["x-switchboard-request-id"])
    assert (record.route, record.cache_hit, record.cost_micros) == ("cache", True, 0)
    assert (record.cache_layer, record.intent) == ("answers", "track_order")
    assert record.large_cost_micros > 0  # the saving: what the baseline model would have cost


def test_an_approved_answer_matches_chinese_and_names_a_chinese_intent_percent_encoded(
    gateway: GatewayServer, upstream: MockUpstream, answers_files: tuple[Path, Path]
) -> None:
    text, headers = ask(gateway, "请问可以开发票吗？")

    assert upstream.history == []
    assert headers["x-switchboard-intent"].isascii()
    assert unquote(headers["x-switchboard-intent"]) == "开发票"
    assert text == load_answers(answers_files[0]).intents["开发票"].answer
    record = ledger_record(gateway, headers["x-switchboard-request-id"])
    assert record.intent == "开发票"


def test_a_handoff_request_gets_no_approved_answer_even_for_a_known_intent(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    text, headers = ask(gateway, "我要找人工客服")  # human_agent, and a request for a person

    assert headers["x-switchboard-handoff"] == "human_request"
    assert headers["x-switchboard-answers"] == "bypass: handoff"
    assert headers["x-switchboard-semantic-cache"] == "bypass: handoff"
    assert "x-switchboard-cache-layer" not in headers
    assert len(upstream.history) == 1 and text.startswith("echo: ")


def test_a_request_for_json_output_gets_no_stored_or_approved_prose(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    with _client(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "Where is my parcel right now?"}],
            response_format={"type": "json_object"},
        )
    headers = raw.headers

    assert headers["x-switchboard-answers"] == "bypass: structured output"
    assert headers["x-switchboard-semantic-cache"] == "bypass: structured output"
    assert len(upstream.history) == 1


def test_a_follow_up_turn_is_not_answered_from_either_layer_by_default(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    with _client(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {"role": "user", "content": "I bought a lamp last week"},
                {"role": "assistant", "content": "How can I help with it?"},
                {"role": "user", "content": "Where is my parcel right now?"},
            ],
        )
    headers = raw.headers

    assert headers["x-switchboard-answers"] == "bypass: multi-turn"
    assert headers["x-switchboard-semantic-cache"] == "miss: multi-turn"
    assert len(upstream.history) == 1


def test_the_matcher_abstains_on_an_unknown_question_and_the_large_tier_answers(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    question = "Can you write a short poem about autumn leaves for the Zephyr lamp"
    text, headers = ask(gateway, question, model="gpt-4o")

    assert headers["x-switchboard-answers"].startswith("abstained")
    assert headers["x-switchboard-route"] == "large"
    assert "x-switchboard-cache-layer" not in headers
    assert [r.json["model"] for r in upstream.history] == ["gpt-4o"]
    assert text == "echo: " + question


def test_a_streamed_approved_answer_is_valid_sse_with_usage_only_when_asked(
    gateway: GatewayServer, upstream: MockUpstream, spec: SpecValidator
) -> None:
    def stream(**extra: Any) -> httpx.Response:
        return httpx.post(
            gateway.base_url + "/chat/completions",
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": "how long does a refund take?"}],
                "stream": True,
                **extra,
            },
            headers={"authorization": f"Bearer {ACME_KEY}"},
            timeout=10,
        )

    with_usage = stream(stream_options={"include_usage": True})
    without = stream()

    assert upstream.history == []
    assert with_usage.headers["x-switchboard-cache-layer"] == "answers"
    assert with_usage.headers["x-switchboard-intent"] == "refund_time"
    chunks = spec.validate_sse(with_usage.text)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("Refunds reach your original payment method")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    plain = spec.validate_sse(without.text)
    assert all(c.get("usage") is None for c in plain)
    # The openai client reads the same stream.
    with _client(gateway) as client:
        pieces = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "how long does a refund take?"}],
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == text


# --- the semantic cache -----------------------------------------------------------------------


def test_a_paraphrase_is_answered_from_the_semantic_cache_after_a_first_miss(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    product = "Quokka"
    first, miss = ask(gateway, f"how do I reset my password for the {product} app")
    second, hit = ask(gateway, f"how can I reset my password for the {product} app")

    assert miss["x-switchboard-semantic-cache"].startswith("miss")
    assert len(upstream.history) == 1
    assert second == first == f"echo: how do I reset my password for the {product} app"
    assert hit["x-switchboard-route"] == "cache"
    assert hit["x-switchboard-cache-layer"] == "semantic"
    assert float(hit["x-switchboard-similarity"]) >= 0.85
    record = ledger_record(gateway, hit["x-switchboard-request-id"])
    assert (record.route, record.cache_layer, record.cost_micros) == ("cache", "semantic", 0)
    assert record.large_cost_micros > 0


def test_a_near_miss_with_another_order_number_is_not_served(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    first, _ = ask(gateway, "can you gift wrap the Marlin lamp in order 12345")
    second, headers = ask(gateway, "can you gift wrap the Marlin lamp in order 12346")

    assert headers["x-switchboard-semantic-cache"] == "miss: guard: entities"
    assert headers["x-switchboard-route"] != "cache"
    assert len(upstream.history) == 2
    assert "12346" in second and "12345" not in second


def test_a_streamed_model_answer_is_stored_and_served_to_a_paraphrase(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    product = "Tundra"
    with _client(gateway) as client:
        pieces = client.chat.completions.create(
            model="auto",
            messages=[
                {"role": "user", "content": f"what payment methods do you accept for {product}"}
            ],
            stream=True,
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    text, headers = ask(gateway, f"which payment methods do you accept for {product}")

    assert headers["x-switchboard-cache-layer"] == "semantic"
    assert text == streamed
    assert len(upstream.history) == 1


def test_a_tenant_never_gets_another_tenants_entries_from_either_layer(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    question = "can the Walrus lamp run on 110 volts"
    ask(gateway, question, key=ACME_KEY)  # stored for acme
    _, semantic = ask(gateway, question.replace("can the", "Can the"), key=GLOBEX_KEY)
    _, answers = ask(gateway, "Where is my parcel right now?", key=GLOBEX_KEY)

    assert len(upstream.history) == 3  # globex's two questions went to a model
    assert semantic["x-switchboard-semantic-cache"] == "miss: empty" or semantic[
        "x-switchboard-semantic-cache"
    ].startswith("miss")
    assert "x-switchboard-cache-layer" not in semantic
    assert "x-switchboard-cache-layer" not in answers and "x-switchboard-intent" not in answers
    # globex's own entry serves globex.
    _, again = ask(gateway, question, key=GLOBEX_KEY)
    assert again["x-switchboard-cache-layer"] in ("exact", "semantic")
    assert len(upstream.history) == 3


def test_raw_personal_values_never_reach_the_semantic_store(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    question = f"please call me on {PHONE} or write to {EMAIL} about the Heron lamp"
    text, headers = ask(gateway, question)

    assert text == "echo: " + question  # the client gets its values back
    sent = json.dumps(upstream.history[0].json, ensure_ascii=False)
    assert PHONE not in sent and EMAIL not in sent
    listing = admin("GET", gateway, "/admin/cache/acme/semantic", params={"limit": 500}).json()
    mine = [e for e in listing["data"] if e["request_id"] == headers["x-switchboard-request-id"]]
    assert len(mine) == 1 and "[PHONE_1]" in mine[0]["answer"]  # stored, and stored masked
    store = Path(gateway.settings.data_dir) / "semantic-cache"
    files = [p for p in store.rglob("*") if p.is_file()]
    assert files
    for path in files:
        blob = path.read_bytes()
        assert PHONE.encode() not in blob and EMAIL.encode() not in blob, path


def test_requests_that_differ_only_in_a_masked_value_never_share_an_entry(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    first, _ = ask(gateway, "call me on 13812345678 about the Puffin password reset")
    second, headers = ask(gateway, "call me on 13987654321 about the Puffin password reset")

    # Both read "call me on [PHONE_1] ..." masked: the values' keyed hashes keep them apart.
    assert headers["x-switchboard-semantic-cache"] == "miss: other earlier turns or scope"
    assert len(upstream.history) == 2
    assert "13987654321" in second and "13812345678" not in second


# --- feedback and admin -----------------------------------------------------------------------


def test_bad_feedback_takes_the_served_entry_out_of_the_semantic_cache(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    product = "Bison"
    ask(gateway, f"how do I reset my password for the {product} router")
    _, hit = ask(gateway, f"how can I reset my password for the {product} router")
    assert hit["x-switchboard-cache-layer"] == "semantic"

    verdict = httpx.post(
        gateway.base_url + "/feedback",
        json={"request_id": hit["x-switchboard-request-id"], "verdict": "bad"},
        headers={"authorization": f"Bearer {ACME_KEY}"},
        timeout=10,
    )
    _, after = ask(gateway, f"how can I reset the password for the {product} router")

    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["invalidated"] is True
    assert "x-switchboard-cache-layer" not in after
    assert len(upstream.history) == 2


def test_admin_endpoints_list_invalidate_and_purge_a_tenants_entries(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    product = "Ibex"
    question = f"what payment methods do you accept for the {product} kettle"
    _, stored = ask(gateway, question)
    _, exact = ask(gateway, question)
    assert exact["x-switchboard-cache-layer"] == "exact"

    listing = admin("GET", gateway, "/admin/cache/acme/semantic", params={"limit": 1})
    assert listing.status_code == 200, listing.text
    page = listing.json()
    assert page["total"] >= 1 and len(page["data"]) == 1 and page["limit"] == 1
    newest = page["data"][0]
    assert newest["request_id"] == stored["x-switchboard-request-id"]
    assert newest["answer"] == "echo: " + question
    tenant_key = httpx.get(
        gateway.root_url + "/admin/cache/acme/semantic",
        headers={"authorization": f"Bearer {ACME_KEY}"},
    )
    assert tenant_key.status_code == 401

    gone = admin("DELETE", gateway, f"/admin/cache/acme/semantic/{newest['id']}")
    again = admin("DELETE", gateway, f"/admin/cache/acme/semantic/{newest['id']}")
    other = admin("DELETE", gateway, f"/admin/cache/globex/semantic/{newest['id']}")
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert again.status_code == 404 and other.status_code == 404

    ask(gateway, f"what payment methods do you accept for the {product} toaster")
    purged = admin("POST", gateway, "/admin/cache/acme/purge")
    assert purged.status_code == 200, purged.text
    assert purged.json()["semantic_entries"] >= 1 and purged.json()["exact"] is True
    assert admin("GET", gateway, "/admin/cache/acme/semantic").json()["total"] == 0
    calls = len(upstream.history)
    _, fresh = ask(gateway, question)  # neither the exact nor the semantic entry is left
    assert "x-switchboard-cache-layer" not in fresh
    assert len(upstream.history) == calls + 1


def test_a_promoted_example_is_added_to_the_answers_file(
    gateway: GatewayServer, answers_files: tuple[Path, Path]
) -> None:
    response = admin(
        "POST",
        gateway,
        "/admin/answers/acme/promote",
        json={"intent": "track_order", "example": "where has my stuff got to"},
    )
    unknown = admin(
        "POST", gateway, "/admin/answers/acme/promote", json={"intent": "nope", "example": "x"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["added"] is True
    assert "gateway answers train" in response.json()["next"]
    examples = load_answers(answers_files[0]).intents["track_order"].examples
    assert "where has my stuff got to" in examples
    assert unknown.status_code == 400 and "no intent 'nope'" in unknown.json()["error"]["message"]


def test_the_spend_report_counts_answers_per_layer_and_their_savings(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    ask(gateway, "where is my order")
    report = admin("GET", gateway, "/admin/reports/spend", params={"tenant": "acme"})

    assert report.status_code == 200, report.text
    layers = report.json()["cache_layers"]["layers"]
    assert layers["answers"]["requests"] >= 1
    assert layers["answers"]["cost_micros"] == 0
    assert layers["answers"]["savings_micros"] > 0
    assert set(layers) == {"exact", "answers", "semantic"}
    page = admin("GET", gateway, "/admin/reports", params={"tenant": "acme"})
    assert page.status_code == 200
    approved = layers["answers"]["requests"]
    assert f"{approved:,} approved" in page.text
