"""Handoff signals in English and Chinese, their negatives, and the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.safety import HandoffConfig, detect_handoff, handoff_signals
from gateway.safety.evaluation import evaluate_handoff

DATA = Path(__file__).parent / "data"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def reason(text: str, config: HandoffConfig | None = None) -> str | None:
    signal = detect_handoff(user(text), config or HandoffConfig())
    return signal.header_value if signal else None


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a human.",
        "Can I speak to a real person please?",
        "agent",
        "Let me speak to your manager.",
        "转人工",
        "人工客服在吗？",
        "我不想跟机器人聊，找个真人",
        "叫你们经理出来",
    ],
)
def test_an_explicit_request_for_a_person_is_a_handoff(text: str) -> None:
    assert reason(text) == "human_request"


@pytest.mark.parametrize(
    "text",
    [
        "WHERE IS MY PACKAGE??? I PAID TWO WEEKS AGO!!!",
        "You guys are a bunch of scammers.",
        "what the fuck is wrong with your delivery",
        "你们这是什么垃圾服务！",
        "气死我了，等了半个月还没到！！！",
    ],
)
def test_strong_anger_or_abuse_is_a_handoff(text: str) -> None:
    assert reason(text) == "anger"


@pytest.mark.parametrize(
    "text",
    [
        "If I don't get my money back by Friday I'm contacting my lawyer.",
        "I will file a chargeback with my bank.",
        "I'm going to report you to the FTC.",
        "我要投诉到消协",
        "再不处理我就打12315了",
        "不退款我就去法院告你们",
    ],
)
def test_a_legal_or_regulatory_threat_is_a_handoff(text: str) -> None:
    assert reason(text) == "legal_threat"


@pytest.mark.parametrize(
    "text",
    [
        "I'm not angry, just asking when it will ship.",
        "No need for a human, I just want the tracking link.",
        "I don't need to talk to an agent, the bot is fine.",
        "Is this email a scam? It says my account is locked.",
        "My husband is a lawyer and needs the invoice in his firm's name.",
        "The court shoes I ordered are too small.",
        "How do I dispute a charge if I ever need to?",
        "Are you a real person?",
        "不用转人工，你告诉我运单号就行",
        "不需要人工客服，谢谢",
        "我没生气，只是问问什么时候发货",
        "人工智能音箱有货吗？",
        "这个垃圾桶多大尺寸？",
        "消协的电话是多少？我想咨询别的事情",
        "Where is my order?",
        "",
    ],
)
def test_negations_and_look_alikes_are_not_a_handoff(text: str) -> None:
    assert reason(text) is None


def test_a_handoff_request_comes_first_even_with_a_question_attached() -> None:
    assert reason("转人工，我的快递到哪了") == "human_request"


def test_several_signals_are_all_reported_and_the_most_serious_first() -> None:
    signals = handoff_signals(user("Get me a human NOW, you scammers, or I'm calling my lawyer."))
    assert [s.reason for s in signals] == ["legal_threat", "human_request", "anger"]
    assert detect_handoff(user("转人工，不然我投诉到消协")).reason == "legal_threat"  # type: ignore[union-attr]


def test_the_same_question_after_an_answer_is_a_repeat() -> None:
    messages = [
        {"role": "user", "content": "退款什么时候到账"},
        {"role": "assistant", "content": "退款一般3-5个工作日原路退回。"},
        {"role": "user", "content": "退款到底什么时候到账？"},
    ]
    assert detect_handoff(messages).reason == "repeated_question"  # type: ignore[union-attr]


def test_a_repeat_needs_an_answer_in_between_and_a_real_question() -> None:
    unanswered = user("Where is my order?") + user("Where is my order?")
    assert detect_handoff(unanswered) is None
    thanks = [
        {"role": "user", "content": "ok"},
        {"role": "assistant", "content": "Anything else?"},
        {"role": "user", "content": "ok"},
    ]
    assert detect_handoff(thanks) is None
    different = [
        {"role": "user", "content": "Do you have this in blue?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Do you have this in red?"},
    ]
    assert detect_handoff(different) is None


def test_only_the_last_user_turn_is_judged() -> None:
    messages = [
        {"role": "user", "content": "I asked for a human earlier"},
        {"role": "assistant", "content": "How can I help?"},
        {"role": "user", "content": "Fine, what are your opening hours?"},
    ]
    assert detect_handoff(messages) is None
    assert detect_handoff([{"role": "system", "content": "转人工"}]) is None


def test_content_parts_are_read() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "talk to a human"}]}]
    assert detect_handoff(messages).reason == "human_request"  # type: ignore[union-attr]


def test_shipped_intents_and_a_tenants_own_list() -> None:
    assert reason("凭什么拒绝我的退款申请？") == "intent:refund_dispute"
    assert reason("Please close my account and delete my data.") == "intent:close_account"
    assert reason("I want to delete my account.", HandoffConfig(intents={})) is None
    config = HandoffConfig(intents={"warranty_claim": ["warranty ... broken", "保修"]})
    assert reason("My warranty says it covers it, and it's broken", config) == (
        "intent:warranty_claim"
    )
    assert reason("这个能保修吗", config) == "intent:warranty_claim"
    assert reason("凭什么拒绝我的退款申请？", config) is None


def test_signals_can_be_switched_off() -> None:
    config = HandoffConfig(signals=("legal_threat",))
    assert reason("转人工", config) is None
    assert reason("I'll sue you", config) == "legal_threat"


def test_a_bad_config_names_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="unknown handoff signal.*angry.*choose from"):
        HandoffConfig(signals=("angry",))
    with pytest.raises(msgspec.ValidationError, match="repeat_similarity"):
        msgspec.convert({"repeat_similarity": 2}, HandoffConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"intent": {}}, HandoffConfig)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 200_000,
        "转人工" * 50_000,
        "fuck " * 20_000,
        "[PHONE_1] " * 20_000,
        "how do I dispute a charge, " * 5_000,  # every match checked against its clause
        "不用转人工，" * 10_000,  # every match negated
    ],
)
def test_very_long_messages_are_handled(text: str) -> None:
    handoff_signals(user(text))


def test_the_labelled_set_has_both_languages_and_every_signal() -> None:
    lines = (DATA / "handoff_labelled.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) >= 150
    scores = evaluate_handoff(rows)
    for name, score in scores.items():
        assert score.tp + score.fn >= 10, name
        assert score.precision >= 0.9 and score.recall >= 0.9, name
