"""Exact-cache keys: which chat requests may share one stored answer, and which never may.

Two requests share an answer only when everything that could change the answer is the same: the
tenant, the model name the bot asked for, the conversation (normalised, see ``normalise_text``) and
every request parameter except a short list of fields that change how an answer is delivered or
accounted, never its text (``IGNORED_FIELDS``). Unknown fields count: clients add new parameters
every month, and an unknown one that splits the cache costs a miss, while one that is ignored
wrongly costs a wrong answer.

The tenant is hashed into the key, so no lookup can ever reach another tenant's answers. Order
numbers, amounts and negations need no special treatment in the key: they are part of the text,
and only whitespace, Unicode compatibility forms (NFKC) and number spelling (``0`` = ``0.0``) are
normalised away, so "I want a refund" and "I don't want a refund" never meet.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import msgspec

# Bump when the key material changes, so answers stored under the old scheme are never read.
KEY_VERSION = 1

# Fields that do not change the text of the answer. `stream` is here on purpose: a streamed and a
# non-streamed request share answers (the cache replays a stored answer as a stream). `user` is the
# end customer's id: leaving it out is what lets customers share answers to the same question.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)

# Content part types whose text is the whole of their meaning.
_TEXT_PARTS = frozenset({"text", "input_text"})

_encode = msgspec.json.Encoder(order="sorted").encode


def normalise_text(text: str) -> str:
    """NFKC, whitespace runs collapsed to one space, stripped; case and punctuation kept.

    NFKC folds full-width forms (``１２３``, ``？``, ``Ａ``, the ideographic space) into their
    usual spelling, which Chinese input methods produce interchangeably. Case is kept: it rarely
    splits the cache and can carry meaning (``US`` / ``us``).
    """
    return " ".join(nfkc(text).split())


# Full-width ASCII forms and the ideographic space: what Chinese input methods produce.
_FULL_WIDTH = re.compile("[\uff01-\uff5e\u3000]")


def _half_width(match: re.Match[str]) -> str:
    char = match.group()
    return " " if char == "\u3000" else chr(ord(char) - 0xFEE0)


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, faster on Chinese text.

    CPython's NFKC takes a slow path over the whole string as soon as one character needs it:
    27 µs for 108 characters of Chinese with full-width punctuation, measured. Full-width
    punctuation is in nearly every Chinese message, so map those forms first (to exactly their
    NFKC images) and normalise only what still needs it: 8 µs.
    """
    text = _FULL_WIDTH.sub(_half_width, text)
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def uncacheable_reason(payload: Mapping[str, Any]) -> str | None:
    """Why this request's answer must not be cached or served from the cache, or None.

    - ``n > 1``: several samples are asked for precisely because they should differ.
    - tools (or legacy functions): the answer is often a tool call, i.e. an action (look up,
      cancel, refund) the bot will execute; replaying a stored one re-runs a decision made for
      another conversation's state, and tool-calling turns are mostly about one customer's data
      anyway. Streamed tool calls are also not captured in ``ctx.streamed_text``. Not worth it.
    - images, audio, files: the key would have to hash the media itself (or trust a URL whose
      content can change); support photos are one customer's anyway.
    - audio output, live web search: the answer is not text, or depends on the moment.
    - logprobs: a replayed stream cannot carry them, and stream is not part of the key.
    """
    n = payload.get("n")
    if isinstance(n, int) and n > 1:
        return "n > 1"
    if payload.get("tools") or payload.get("functions"):
        return "tools"
    if payload.get("logprobs") or payload.get("top_logprobs"):
        return "logprobs"
    if payload.get("audio") is not None:
        return "audio output"
    modalities = payload.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        return "non-text output"
    if payload.get("web_search_options") is not None:
        return "web search"
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return "no messages"
    for message in messages:
        if not isinstance(message, dict):
            return "malformed message"
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            return "malformed content"
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
                kind = part.get("type") if isinstance(part, dict) else None
                # The reason ends up in a response header: name only well-formed types.
                safe = isinstance(kind, str) and kind.isascii() and kind.isidentifier()
                return f"{kind if safe else 'unknown'} content"[:64]
            if not isinstance(part.get("text"), str):
                return "malformed content"
    return None


def cache_key(
    tenant: str, payload: Mapping[str, Any], values: Mapping[str, str] | None = None
) -> str | None:
    """The SHA-256 hex key of a chat request for ``tenant``; None when it must not be cached.

    ``values``: for a masked request (``payload`` holds placeholders), each placeholder's keyed
    hash of the value it stands for, so requests that differ only in a masked value (two phone
    numbers) never share a key, while the key holds neither value.
    """
    if uncacheable_reason(payload) is not None:
        return None
    messages = payload["messages"]
    params = {
        name: _canonical(value)
        for name, value in payload.items()
        if name not in IGNORED_FIELDS
        and name not in ("model", "messages")
        and value is not None
        and not (name == "n" and value == 1)  # the default, spelled out
    }
    material = {
        "v": KEY_VERSION,
        "tenant": tenant,
        "model": payload.get("model"),
        "messages": [_message(m) for m in messages],
        "params": params,
    }
    if values:
        material["values"] = dict(values)
    return hashlib.sha256(_encode(material)).hexdigest()


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.items():
        if value is None:
            continue
        if field == "content":
            out[field] = normalise_text(_text_of(value))
        elif field == "name" and isinstance(value, str):
            out[field] = normalise_text(value)
        else:  # role, tool_calls, tool_call_id, refusal, ...: verbatim
            out[field] = _canonical(value)
    return out


def _text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content)


def _canonical(value: Any) -> Any:
    """JSON value with integral floats as ints, so ``temperature: 0`` and ``0.0`` share a key."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


# --- Personalised requests -------------------------------------------------------------------
#
# A question that names an order, a parcel, an account, an e-mail, a phone or a sum of money is
# about one customer. Its answer is not cached by default (``CacheConfig.personalised``), because:
# - the answer is usually about that customer's data at that moment (where the parcel is, whether
#   the refund went through), so replaying it later, even to the same customer, can be stale;
# - anyone who sends the same text (another customer mistyping a number, someone guessing order
#   numbers) would get the first customer's answer, personal details included;
# - the stored answer would be personal data at rest in the cache (disk or Redis), outside the
#   retention rules that cover the ledger.
# The exact key already keeps different numbers apart; this is about not storing them at all.
# Patterns run on NFKC text (full-width digits become ASCII) and never split words, so they work
# on Chinese. They err towards "personalised": a false positive costs a cache miss, a false
# negative can cost a customer's privacy.

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")

# Every other pattern needs a digit, so text without one (most questions) is never scanned.
_NUMBERED = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        # Runs of 6+ digits, groups split by single spaces or dashes: order, tracking, account,
        # card and ID numbers, and phone numbers (Chinese mobiles 1[3-9]\d{9}, +86 ...).
        r"(?<!\d)\d(?:[ -]?\d){5,}",
        # North-American phones: (415) 555-2671, 415.555.2671.
        r"\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b",
        # "#12345", "order #123".
        r"#\s?\d{3,}",
        # An order / parcel / account reference followed by an identifier with a digit:
        # "order ABC123", "tracking no: SF1234", "订单号：A2024", "运单 JD0012".
        r"(?:\b(?:order|tracking|waybill|invoice|account|acct|ticket|case|booking|reservation"
        r"|reference|ref|parcel|package|shipment|member(?:ship)?|customer)s?"
        r"|订单|单号|运单|快递单|物流单|账号|账户|帐号|帐户|会员号|卡号|手机号|电话|发票|工单)"
        r"\s*(?:no\.?|number|num|id|code|号码|编号|号)?\s*[:#]?\s*(?:是|为)?\s*"
        r"(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,}",
        # Amounts with a currency: $49.99, ¥ 299, €10, 299元, 50块, 100 USD.
        r"[$€£¥]\s?\d",
        r"\d[\d,.]*\s?(?:元|块|美元|欧元|英镑|人民币|港币)",
        r"\d[\d,.]*\s?(?:rmb|usd|eur|cny|gbp|hkd|dollars?|euros?|bucks)(?![a-z])",
        # Street addresses: 中山路123号, 3栋2单元401室, 12 Baker Street.
        r"(?:路|街|道|巷|弄|村)\s?\d+\s?号",
        r"\d+\s?(?:栋|幢|单元|室)",
        r"\b\d{1,5}\s(?:[a-z]+\s){1,3}(?:street|st|road|rd|avenue|ave|lane|ln|boulevard|blvd)\b",
    )
)
_DIGIT = re.compile(r"\d")

# Calendar dates are not identifiers: "will it arrive by 2024-05-12?" stays cacheable.
_DATE = re.compile(r"(?<!\d)\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d)")

# Roles whose text comes from the customer or from the customer's records. System and developer
# prompts are written by the operator and shared by every customer (a hotline number there must
# not switch the cache off for everyone); assistant text is the model's own.
_CUSTOMER_ROLES = frozenset({"user", "tool", "function"})


def is_personalised(text: str) -> bool:
    """Does this text name an order, account, e-mail, phone, card, address or sum of money?"""
    text = nfkc(text)
    if "@" in text and _EMAIL.search(text):
        return True
    if not _DIGIT.search(text):
        return False
    text = _DATE.sub(" ", text)
    return any(pattern.search(text) for pattern in _NUMBERED)


def is_personalised_request(payload: Mapping[str, Any]) -> bool:
    """Is any user (or tool-result) message of this request personalised?"""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _CUSTOMER_ROLES:
            continue
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "\n".join(
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        else:
            continue
        if is_personalised(text):
            return True
    return False
