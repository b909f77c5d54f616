"""How sure the small tier was of an answer: the cascade's escalation decision.

The cascade lets the small tier answer first and asks the large tier only when the small answer
looks unsure. An answer is judged on what the gateway sees without another model call:

* token log-probabilities (llama.cpp always gives them; an OpenAI-compatible server does when
  asked with ``logprobs: true``): the mean over the answer, and the share of tokens the model
  itself found unlikely (below ``low_token_logprob``), which catches a confident start that
  trails off into guessing;
* hedging and refusal phrases, English and Chinese ("I'm not sure", "as an AI", "我不确定",
  "无法回答");
* truncation (``finish_reason: length``: the answer was cut at the output cap) and an empty
  answer;
* degenerate repetition (the same short phrase over and over, a small model's failure mode;
  also without spaces: "你可能知道，你可能知道，...", a row of emoji);
* an answer in another language than the question (a Chinese question answered in English, or
  the other way round), when the question is given.

Each signal subtracts from 1.0; the answer escalates when the result is below the tenant's
``threshold``. The reasons name every signal that fired, for the ledger and the headers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.tiers.base import TokenLogprob

Share = Annotated[float, Meta(ge=0.0, le=1.0)]

# Phrases an unsure or refusing model uses; matched case-insensitively anywhere in the answer.
_HEDGES_EN = (
    r"\bi(?:'m| am) not (?:sure|certain)\b",
    r"\bi do(?:n't| not) know\b",
    r"\bi(?:'m| am) unable to\b",
    r"\bi can(?:'t|not) (?:help|answer|provide|assist|access|determine)\b",
    r"\bas an ai\b",
    r"\bas a (?:chatbot|language model|virtual assistant)\b",
    r"\bsorry for any confusion\b",
    r"\bi do(?:n't| not) have (?:access|information|enough)\b",
    r"\bit(?:'s| is) (?:hard|difficult|impossible) to (?:say|know|tell)\b",
    r"\bi(?:'m| am) sorry, but\b",
    r"\bplease (?:contact|consult|check with)\b",
    r"\bi (?:think|believe|guess) (?:it )?(?:might|may|could)\b",
)
_HEDGES_ZH = (
    "我不确定",
    "我不知道",
    "无法回答",
    "无法确定",
    "不太清楚",
    "作为一个人工智能",
    "作为AI",
    "抱歉，我无法",
    "我没有办法",
)
_HEDGE = re.compile("|".join(_HEDGES_EN) + "|" + "|".join(map(re.escape, _HEDGES_ZH)), re.I)


CascadeStreamMode = Literal["off", "buffer"]
CASCADE_STREAM_MODES: tuple[str, ...] = ("off", "buffer")


class CascadeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``tenants.NAME.safety.cascade``: the small tier answers first, the large one when the
    small answer looks unsure (docs/safety.md, "Cascade")."""

    enabled: bool = False
    # Escalate when the confidence is below this (1.0 = everything escalates, 0 = nothing).
    threshold: Share = 0.5
    # A token below this log-probability (e^-2.3 ≈ 10%) counts as one the model guessed.
    low_token_logprob: Annotated[float, Meta(le=0.0)] = -2.3
    # The tier that answers first and the one it escalates to (names under `tiers`).
    small_tier: str = "small"
    large_tier: str = "large"
    # Streams: `buffer` holds the small tier's stream up to `stream_buffer_tokens` before
    # judging it (a longer answer is sent unjudged: past the bound it can no longer be taken
    # back); `off` streams the routed tier as usual, without a cascade.
    stream: CascadeStreamMode = "buffer"
    stream_buffer_tokens: Annotated[int, Meta(ge=1, le=4096)] = 256
    # Ask an OpenAI-compatible small tier for token log-probabilities (`logprobs: true`; the
    # client gets them only if it asked). Off for a server that rejects the field. llama.cpp
    # in-process always gives them.
    request_logprobs: bool = True

    def __post_init__(self) -> None:
        if self.small_tier == self.large_tier:
            raise ValueError(
                f"small_tier and large_tier are both {self.small_tier!r}; the cascade escalates "
                "from one tier to another (e.g. small_tier: small, large_tier: large)"
            )


# A short unit (1-10 characters) repeated at least 6 times in a row: "你可能知道，" x 8, "👌" x 20.
_RUN = re.compile(r"(.{1,10}?)\1{5,}", re.S)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True, slots=True)
class Confidence:
    score: float
    reasons: tuple[str, ...]
    mean_logprob: float | None = None
    low_token_share: float | None = None

    def escalate(self, threshold: float) -> bool:
        return self.score < threshold


def _repetitive(text: str) -> bool:
    """A degenerate loop: a longer answer made of very few distinct words, one 3-word phrase
    making up most of it, or a short unit repeated in a row over a third of it."""
    longest = max((m.end() - m.start() for m in _RUN.finditer(text)), default=0)
    if longest >= 12 and longest * 3 >= len(text):
        return True
    words = [w.strip(".,;:!?\"'").casefold() for w in text.split()]
    if len(words) < 12:
        return False
    if len(set(words)) <= len(words) * 0.3:
        return True
    trigrams = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    most = max(trigrams.count(t) for t in set(trigrams[:40]))
    return most * 3 >= len(words) * 0.5


def _chinese_share(text: str) -> float | None:
    """Chinese characters among Chinese characters and Latin words (a character is about a
    word); None for text with too little of either to tell."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    if cjk + latin < 2:
        return None
    return cjk / (cjk + latin)


def _other_language(question: str, answer: str) -> bool:
    asked, answered = _chinese_share(question), _chinese_share(answer)
    if asked is None or answered is None:
        return False
    if asked >= 0.5:  # a Chinese question (brand names and order codes aside)
        return answered < 0.5
    return asked == 0.0 and answered > 0.5


def judge(
    text: str,
    logprobs: Sequence[TokenLogprob] | None,
    finish_reason: str | None,
    config: CascadeConfig,
    *,
    question: str | None = None,
) -> Confidence:
    """The confidence of one small-tier answer and the signals that lowered it; ``question``
    (the customer's last turn, optional) for the language check."""
    score = 1.0
    reasons: list[str] = []
    stripped = text.strip()
    if not stripped:
        return Confidence(0.0, ("empty answer",))
    if finish_reason == "length":
        score -= 0.5
        reasons.append("cut at the output cap")
    hedge = _HEDGE.search(stripped)
    if hedge is not None:
        score -= 0.6
        reasons.append(f"hedges: {hedge.group(0)!r}")
    if _repetitive(stripped):
        score -= 0.6
        reasons.append("repeats itself")
    if question is not None and _other_language(question, stripped):
        score -= 0.6
        reasons.append("answers in another language")
    mean = low = None
    values = [lp.logprob for lp in logprobs or () if math.isfinite(lp.logprob)]
    if values:
        mean = sum(values) / len(values)
        low = sum(1 for v in values if v < config.low_token_logprob) / len(values)
        # A mean of -0.3 (74% average token probability) costs nothing; -1.5 costs 0.6.
        penalty = min(0.6, max(0.0, (-mean - 0.3) * 0.5))
        if penalty > 0:
            score -= penalty
            reasons.append(f"mean token logprob {mean:.2f}")
        if low > 0.2:
            score -= min(0.4, (low - 0.2) * 2)
            reasons.append(f"{low:.0%} of tokens guessed")
    return Confidence(max(0.0, min(1.0, score)), tuple(reasons), mean, low)
