"""Cache keys: what shares an answer, what never does, and which requests are personal."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.cache.key import (
    IGNORED_FIELDS,
    cache_key,
    is_personalised,
    is_personalised_request,
    normalise_text,
    uncacheable_reason,
)


def payload(text: str = "How do I return an item?", **params: Any) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are a helpful support agent."},
            {"role": "user", "content": text},
        ],
        **params,
    }


def key(body: dict[str, Any], tenant: str = "acme") -> str:
    result = cache_key(tenant, body)
    assert result is not None
    return result


def test_the_same_request_gets_the_same_sha256_key() -> None:
    first = key(payload())
    assert first == key(copy.deepcopy(payload()))
    assert len(first) == 64 and int(first, 16) >= 0


def test_the_key_ignores_field_order() -> None:
    body = payload(temperature=0.2, max_tokens=100)
    reordered = dict(reversed(list(body.items())))
    assert key(body) == key(reordered)


def test_another_tenant_gets_another_key() -> None:
    assert key(payload(), "acme") != key(payload(), "globex")


def test_another_model_name_gets_another_key() -> None:
    assert key(payload()) != key({**payload(), "model": "gpt-4o"})


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        ("temperature", 0.2, 0.7),
        ("top_p", 0.5, 1),
        ("max_tokens", 100, 200),
        ("max_completion_tokens", 100, 200),
        ("stop", ["\n"], ["END"]),
        ("seed", 1, 2),
        ("presence_penalty", 0, 0.5),
        ("frequency_penalty", 0, 0.5),
        ("logit_bias", {"50256": -100}, {"50256": 100}),
        ("response_format", {"type": "text"}, {"type": "json_object"}),
        ("reasoning_effort", "low", "high"),
        ("some_future_parameter", 1, 2),
    ],
)
def test_every_parameter_that_changes_the_answer_changes_the_key(name: str, a: Any, b: Any) -> None:
    assert key(payload(**{name: a})) != key(payload(**{name: b}))
    assert key(payload(**{name: a})) != key(payload())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("stream", True),
        ("stream_options", {"include_usage": True}),
        ("user", "customer-42"),
        ("metadata", {"conversation": "c-1"}),
        ("store", True),
        ("service_tier", "auto"),
    ],
)
def test_fields_that_do_not_change_the_text_do_not_change_the_key(name: str, value: Any) -> None:
    assert name in IGNORED_FIELDS
    assert key(payload(**{name: value})) == key(payload())


def test_defaults_spelled_out_and_number_spelling_do_not_change_the_key() -> None:
    assert key(payload(n=1)) == key(payload())
    assert key(payload(temperature=None)) == key(payload())
    assert key(payload(temperature=0)) == key(payload(temperature=0.0))


def test_other_messages_get_other_keys() -> None:
    assert key(payload("I want a refund")) != key(payload("I don't want a refund"))
    assert key(payload("I want a refund")) != key(payload("i want a refund"))  # case is kept
    assert key(payload("我要退款")) != key(payload("我不要退款"))
    assert key(payload("订单 A 退 100 元")) != key(payload("订单 A 退 200 元"))


def test_the_role_and_name_of_a_message_are_part_of_the_key() -> None:
    as_user = payload()
    as_assistant = copy.deepcopy(as_user)
    as_assistant["messages"][1]["role"] = "assistant"
    named = copy.deepcopy(as_user)
    named["messages"][1]["name"] = "alice"
    assert len({key(as_user), key(as_assistant), key(named)}) == 3


def test_whitespace_only_differences_share_a_key() -> None:
    assert key(payload("How do I  return\nan item? ")) == key(payload("How do I return an item?"))
    assert key(payload("\t怎么 退货？\u3000")) == key(payload("怎么 退货？"))


def test_full_width_forms_share_a_key_after_nfkc() -> None:
    assert key(payload("怎么退货？")) == key(payload("怎么退货?"))
    assert key(payload("ｉＰｈｏｎｅ　１５")) == key(payload("iPhone 15"))
    assert normalise_text("ＡＢＣ\u3000１２３") == "ABC 123"


def test_text_content_parts_key_like_the_same_text() -> None:
    parts = payload()
    parts["messages"][1]["content"] = [{"type": "text", "text": "How do I return an item?"}]
    assert key(parts) == key(payload())


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"n": 2}, "n > 1"),
        ({"tools": [{"type": "function", "function": {"name": "lookup"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["text", "audio"]}, "non-text output"),
    ],
)
def test_requests_whose_answers_must_not_be_shared_have_no_key(
    params: dict[str, Any], reason: str
) -> None:
    body = payload(**params)
    assert cache_key("acme", body) is None
    assert uncacheable_reason(body) == reason


@pytest.mark.parametrize("kind", ["image_url", "input_audio", "file"])
def test_requests_with_images_audio_or_files_have_no_key(kind: str) -> None:
    body = payload()
    body["messages"][1]["content"] = [
        {"type": "text", "text": "Is this damaged?"},
        {"type": kind, kind: {"url": "https://example.com/photo.jpg"}},
    ]
    assert cache_key("acme", body) is None
    assert uncacheable_reason(body) == f"{kind} content"


@pytest.mark.parametrize(
    "text",
    [
        "my order 123456789 hasn't arrived",
        "where is order #123?",
        "tracking no: SF1234",
        "my orders ABC1234 and XYZ5678",
        "email me at jane.doe+shop@example.com",
        "call me on 13812345678",
        "call me on +86 138 1234 5678",
        "(415) 555-2671",
        "card 4111 1111 1111 1111",
        "I was charged $49.99 twice",
        "refund of €10 please",
        "100 USD was taken",
        "ship it to 12 Baker Street",
        "我的订单号是 20240512001",
        "订单号：A2024X",
        "手机 138 1234 5678",
        "１３８１２３４５６７８",
        "退了299元还没到账",
        "多扣了￥１２０",
        "身份证 11010519491231002X",
        "寄到中山路123号",
        "3栋2单元401室",
        "我的邮箱是abc@qq.com",
    ],
)
def test_personal_details_are_detected_in_english_and_chinese(text: str) -> None:
    assert is_personalised(text)


@pytest.mark.parametrize(
    "text",
    [
        "How do I return an item?",
        "What are your opening hours?",
        "Is the iPhone 15 compatible with this case?",
        "Can I order 2 of them?",
        "Will it arrive by 2024-05-12?",
        "where is my order",
        "Which account settings can I change?",
        "I don't want a refund",
        "怎么退货？",
        "如何取消订单？",
        "我的订单在哪里？",
        "客服电话是多少？",
        "退款要多久",
        "支持七天无理由退货吗",
    ],
)
def test_plain_questions_are_not_personalised(text: str) -> None:
    assert not is_personalised(text)


def test_only_customer_messages_make_a_request_personalised() -> None:
    # The operator's system prompt is shared by every customer: its hotline is not personal.
    body = payload()
    body["messages"][0]["content"] = "You are Acme's agent. Hotline: 400-123-4567."
    assert not is_personalised_request(body)
    assert is_personalised_request(payload("my phone is 13812345678"))
    tool = payload()
    tool["messages"].append({"role": "tool", "tool_call_id": "c1", "content": "order 98765432"})
    assert is_personalised_request(tool)


def test_the_reason_names_only_well_formed_content_types() -> None:
    # The reason goes into a response header: client text must not.
    body = payload()
    body["messages"][1]["content"] = [{"type": "evil\r\nset-cookie: x=1", "data": "..."}]
    assert uncacheable_reason(body) == "unknown content"
