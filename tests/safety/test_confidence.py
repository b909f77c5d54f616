"""The cascade's confidence judge: synthetic answers, and the real SmolLM2 model's own."""

from __future__ import annotations

import pytest

from gateway.safety.confidence import CascadeConfig, judge
from gateway.tiers.base import TokenLogprob

CONFIG = CascadeConfig(enabled=True, threshold=0.5)


def lps(*values: float) -> list[TokenLogprob]:
    return [TokenLogprob(token="t", logprob=v) for v in values]


def test_a_sure_complete_answer_keeps_full_confidence() -> None:
    verdict = judge("Your parcel left our warehouse today.", lps(-0.1, -0.2, -0.05), "stop", CONFIG)
    assert verdict.score == 1.0
    assert verdict.reasons == ()
    assert not verdict.escalate(CONFIG.threshold)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I'm not sure, but it might arrive on Monday.", 'hedges: "I\'m not sure"'),
        ("As an AI, I cannot see your order.", "hedges: 'As an AI'"),
        ("我不确定您的包裹什么时候到。", "hedges: '我不确定'"),
        ("抱歉，我无法查询订单。", "hedges: '抱歉，我无法'"),
    ],
)
def test_hedging_in_english_and_chinese_escalates(text: str, reason: str) -> None:
    verdict = judge(text, None, "stop", CONFIG)
    assert reason in verdict.reasons
    assert verdict.escalate(CONFIG.threshold)


def test_an_answer_cut_at_the_output_cap_loses_half() -> None:
    verdict = judge("The steps are: first", None, "length", CONFIG)
    assert verdict.score == 0.5
    assert verdict.reasons == ("cut at the output cap",)


def test_an_empty_answer_always_escalates() -> None:
    assert judge("  \n", lps(-0.1), "stop", CONFIG).score == 0.0


def test_a_degenerate_loop_escalates() -> None:
    verdict = judge("keskusta " * 20, None, "stop", CONFIG)
    assert "repeats itself" in verdict.reasons


@pytest.mark.parametrize(
    "text",
    [
        "👌" * 22,  # SmolLM2's answer to "好的，谢谢"
        "你可能知道，" * 8,
        "退款多久到账？－－－－－－－－－－－－－－－－－－－－",
    ],
)
def test_a_loop_without_spaces_escalates(text: str) -> None:
    verdict = judge(text, None, "stop", CONFIG)
    assert verdict.reasons == ("repeats itself",)
    assert verdict.escalate(CONFIG.threshold)


@pytest.mark.parametrize(
    "text",
    ["Sure!!! Here is the link ------ done.", "Order 1000000 ships today.", "好的，好的，好的。"],
)
def test_short_runs_are_not_loops(text: str) -> None:
    assert "repeats itself" not in judge(text, None, "stop", CONFIG).reasons


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("这个有红色的吗", "This is a classic example of a color-coded code."),
        (
            "支持货到付款吗？",
            "支持货到付款吗？ The Chinese currency is not a direct cash transfer.",
        ),
        ("Where is my order?", "您的订单今天发货，请耐心等待。"),
    ],
)
def test_an_answer_in_another_language_than_the_question_escalates(
    question: str, answer: str
) -> None:
    verdict = judge(answer, None, "stop", CONFIG, question=question)
    assert verdict.reasons == ("answers in another language",)
    assert verdict.escalate(CONFIG.threshold)


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("我想买iPhone 15，有货吗", "iPhone 15 有货，今天下单明天发货。"),
        ("可以用PayPal付款吗", "可以，结账时选择 PayPal 即可。"),
        ("How do I say thank you in Chinese?", "You say 谢谢 (xièxie)."),
        ("OK", "好的"),  # too little text to tell
    ],
)
def test_brand_names_and_quotes_are_not_another_language(question: str, answer: str) -> None:
    verdict = judge(answer, None, "stop", CONFIG, question=question)
    assert "answers in another language" not in verdict.reasons


def test_low_token_probabilities_lower_the_score() -> None:
    # Mean -2.0 costs the most, 0.6; 3 of 4 tokens below -2.3 (75% guessed) costs 0.4 more.
    verdict = judge("Kouilou.", lps(-3.0, -2.5, -2.4, -0.1), "stop", CONFIG)
    assert verdict.mean_logprob == pytest.approx(-2.0)
    assert verdict.low_token_share == 0.75
    assert verdict.score == 0.0
    assert any(r.startswith("mean token logprob") for r in verdict.reasons)
    assert "75% of tokens guessed" in verdict.reasons


def test_non_finite_logprobs_are_ignored() -> None:
    verdict = judge("Fine.", lps(float("-inf"), -0.1), "stop", CONFIG)
    assert verdict.mean_logprob == pytest.approx(-0.1)


def test_the_threshold_is_validated() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"threshold": 1.5}, CascadeConfig)


async def test_the_real_small_model_keeps_an_easy_answer_and_escalates_a_hard_one() -> None:
    from gateway.tiers.llama_cpp import LlamaCppTier

    tier = LlamaCppTier(
        name="small",
        model="smollm2",
        model_file=None,
        threads=1,
        context_tokens=2048,
        queue_limit=4,
        queue_timeout_s=60,
        request_timeout_s=60,
    )
    try:
        await tier.warm_up()

        async def verdict(prompt: str) -> tuple[float, str]:
            answer = await tier.complete(
                {
                    "model": "smollm2",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 48,
                    "temperature": 0,
                }
            )
            finish = answer.body["choices"][0]["finish_reason"]
            return judge(answer.text, answer.logprobs, finish, CONFIG).score, answer.text

        easy, easy_text = await verdict(
            "Reply with one word: what colour is the sky on a clear day?"
        )
        hard, hard_text = await verdict(
            "Translate into Finnish: 'The warranty does not cover water damage caused by misuse.'"
        )
    finally:
        await tier.aclose()
    assert easy >= CONFIG.threshold, f"kept: {easy:.2f} {easy_text!r}"
    assert hard < CONFIG.threshold, f"escalated: {hard:.2f} {hard_text!r}"
