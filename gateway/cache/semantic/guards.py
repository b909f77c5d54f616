"""What must be equal before two requests may share an answer, whatever their vectors say.

A sentence vector is a blur: "I want a refund" and "I don't want a refund", "add" and "remove a
card", order 1001 and order 1002 all land close together. So every request gets a
:class:`Signature`, and a cached answer is served only when the signatures agree
(:func:`conflict`):

* **entities**: numbers (order numbers, amounts, dates, days, sizes), codes with a digit
  (``SF1234``) and e-mail addresses, each as an HMAC-SHA256 with the tenant's key (16 hex
  digits). Equal values give equal hashes, so the guard works, and the cache never holds the raw
  value. The text that is embedded has them masked, so "cancel order 1001" and "please cancel
  order 1002" are close in meaning and told apart by the guard.
* **negation**: the parity of negation cues (not, never, don't, 不, 没, 别, 无法, ...), after
  removing the cues that do not negate (Chinese A-not-A questions like 能不能 / 有没有, 不好意思,
  非常, 是否, ...; "I don't know how to", "not sure", "can't find", which are about the
  asker). Odd against even: refused.
* **direction**: which poles of a few opposing action pairs the text names (add/remove,
  open/close (subscribe/unsubscribe, cancel/restore), increase/decrease, lock/unlock,
  deposit/withdraw, praise/complain; 开通/关闭, 添加/删除, 涨/降, ...). Refused when both texts
  name an axis and the poles they name on it differ ("cancel" against "restore the cancelled");
  a text that names no pole of an axis does not conflict on it
  (会员有什么权益 / 开通会员有哪些好处).
* **minimal pairs**: two texts that are the same apart from one replaced word (in Chinese, one
  character), like "change my delivery/billing address" or 申请退货/申请换货. A
  paraphrase rarely differs in exactly one content word; a different request often does.

All of it is lexicons and rules written for customer service in English and Chinese, not
learned from any evaluation set. Each guard errs towards refusing: a refusal costs one model
call, a wrong answer costs a customer.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "Polarity",
    "Signature",
    "conflict",
    "mask",
    "polarity",
    "polarity_conflict",
    "signature",
    "tenant_key",
]

# --- entities ----------------------------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A number (1,200.50 / 2024-05-01 / 30) or a code holding a digit (SF1234, A-2024-77).
_ENTITY = re.compile(r"(?<![\w])(?:[A-Za-z]+[-_]?)?\d[\w-]*(?:[.,:/]\d+)*", re.ASCII)
_SEPARATORS = re.compile(r"[-_,\s]")
MASK = "#"


def tenant_key(secret: bytes, tenant: str) -> bytes:
    """The tenant's own HMAC key, derived from the gateway's secret: hashes of one tenant's
    entities mean nothing for another's."""
    return hmac.new(secret, b"semantic-cache-entities:" + tenant.encode(), hashlib.sha256).digest()


def _entity_values(text: str) -> list[str]:
    values = [m.lower() for m in _EMAIL.findall(text)]
    text = _EMAIL.sub(" ", text)
    for match in _ENTITY.findall(text):
        value = _SEPARATORS.sub("", match.lower())
        # 1,200 = 1200; 30.0 = 30
        if re.fullmatch(r"\d+\.0+", value):
            value = value.split(".")[0]
        values.append(value.lstrip("0") or "0")
    return values


def mask(text: str) -> str:
    """The text with every entity replaced by ``#``: what is embedded."""
    return _ENTITY.sub(MASK, _EMAIL.sub(MASK, text))


# --- negation ----------------------------------------------------------------------------------

_EN_NEGATION = frozenset(
    "not no never nothing none nobody nowhere neither nor without cannot cant dont doesnt didnt "
    "wont isnt arent wasnt werent havent hasnt hadnt shouldnt wouldnt couldnt mustnt aint "
    "unable".split()
)
# English words (apostrophes dropped first, so "don't" is "dont").
_EN_WORD = re.compile(r"[a-z]+")
# English phrases whose negation is about the asker, not the request: "I don't know how to
# cancel" asks how to cancel, as "I'm not sure where my parcel is" asks where it is.
_EN_NOT_NEGATION = re.compile(
    r"\b(?:do not|dont|did not|didnt|not|cannot|cant|could not|couldnt)\s+"
    r"(?:know|sure|remember|understand|figure out|find|locate)\b|\bno idea\b"
)
# Chinese negation characters and words; removed first: what only looks like negation.
_ZH_NOT_NEGATION = re.compile(
    r"(.)[不没]\1"  # A-not-A questions: 能不能, 是不是, 有没有, 可不可以
    r"|不好意思|不客气|不错|不过|不同|不久|不断|不管|不然|要不|差不多|不少|不仅|不但|不如|"
    r"非常|无论|是否|能否|可否|别的|区别|特别|类别|性别|级别|识别|分别|告别|个别|未来|没事"
)
_ZH_NEGATION = re.compile(r"不|没|别|未|无|非|勿|莫|甭")


def _negations(text: str) -> int:
    english = _EN_NOT_NEGATION.sub(" ", text.replace("'", "").replace("’", ""))
    words = _EN_WORD.findall(english)
    count = sum(1 for w in words if w in _EN_NEGATION or w.endswith("nt") and w[:-2] in _NT)
    count += len(_ZH_NEGATION.findall(_ZH_NOT_NEGATION.sub(" ", text)))
    return count


_NT = frozenset("do does did is are was were have has had should would could must wo ca".split())

# --- direction ---------------------------------------------------------------------------------

# axis: (words of one pole, words of the other). English entries are words (or two-word
# phrases), matched as whole words after lowercasing; Chinese entries are substrings.
_DIRECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "add/remove": (
        ("add", "adding", "added", "insert", "attach", "link", "bind", "include",
         "添加", "增加", "加入", "绑定", "新增", "关联"),
        ("remove", "removing", "removed", "delete", "deleting", "deleted", "erase", "detach",
         "unlink", "unbind", "exclude", "drop", "删除", "移除", "去掉", "解绑", "取消关联"),
    ),
    "open/close": (
        ("open", "opening", "enable", "enabling", "activate", "activating", "start",
         "turn on", "switch on", "resume", "restore", "reactivate", "reopen", "recover",
         "subscribe", "subscribing", "sign up", "signup", "opt in",
         "开通", "开启", "打开", "启用", "激活", "恢复", "重新开", "订阅"),
        ("close", "closing", "disable", "disabling", "deactivate", "stop", "stopping",
         "turn off", "switch off", "pause", "cancel", "canceling", "cancelling", "cancelled",
         "canceled", "terminate", "unsubscribe", "unsubscribing", "opt out",
         "关闭", "停用", "取消", "暂停", "注销", "终止", "退订", "取消订阅"),
    ),
    "up/down": (
        ("increase", "raise", "higher", "upgrade", "more", "rise", "涨", "提高", "升级", "上调",
         "增加额度"),
        ("decrease", "reduce", "lower", "downgrade", "less", "fewer", "drop in", "降", "降低",
         "降级", "下调", "减少"),
    ),
    "lock/unlock": (
        ("lock", "block", "freeze", "suspend", "冻结", "锁定", "封"),
        ("unlock", "unblock", "unfreeze", "unsuspend", "解冻", "解锁", "解封"),
    ),
    "in/out": (
        ("deposit", "top up", "topup", "充值", "存钱", "存款"),
        ("withdraw", "withdrawal", "提现", "取钱", "取款"),
    ),
    "praise/complain": (
        ("praise", "compliment", "thank", "thanks", "happy", "satisfied", "表扬", "夸", "好评",
         "满意", "感谢"),
        ("complain", "complaint", "unhappy", "dissatisfied", "angry", "投诉", "差评", "不满"),
    ),
}


def _compile_directions() -> list[tuple[str, int, re.Pattern[str]]]:
    out = []
    for axis, poles in _DIRECTIONS.items():
        for pole, words in enumerate(poles):
            english = [re.escape(w).replace(r"\ ", r"\s+") for w in words if w.isascii()]
            chinese = [re.escape(w) for w in words if not w.isascii()]
            parts = []
            if english:
                parts.append(r"\b(?:" + "|".join(english) + r")\b")
            if chinese:
                parts.append("|".join(sorted(chinese, key=len, reverse=True)))
            out.append((axis, pole, re.compile("|".join(parts))))
    return out


_DIRECTION_PATTERNS = _compile_directions()
# The second pole's Chinese words often contain the first's (取消关联 ⊃ 关联, 增加额度 ⊃ 增加):
# a pole is not counted where only a longer word of the other pole matched.


def _directions(text: str) -> frozenset[str]:
    found: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    for axis, pole, pattern in _DIRECTION_PATTERNS:
        for m in pattern.finditer(text):
            spans.append((m.start(), m.end(), f"{axis}:{pole}"))
    for start, end, name in spans:
        covered = any(
            s <= start and end <= e and (e - s) > (end - start) and n != name
            for s, e, n in spans
        )
        if not covered:
            found.add(name)
    return frozenset(found)


# --- minimal pairs -----------------------------------------------------------------------------

_STOPWORDS = frozenset(
    "a an the my your our their his her its me i you we they he she it this that these those "
    "to of for in on at by with from about into please can could would will do does did is are "
    "was were be been am how what when where why which who whom any some so just hi hello hey "
    "there here and or if i'd i'm i've id im ive want need like get help".split()
)
INSERTIONS = True
_ZH_FUNCTION = frozenset("的了吗呢吧啊呀嘛么我你您他她它们是在有和与及或请问一下个这那就都也还要想")
_ZH_FUNCTION_WORDS = re.compile(r"可以|能不能|能否|是否|支持|怎么|如何|什么|哪些|请问|为什么")
_TOKEN = re.compile(r"[\u2e80-\U0002ffff]|[a-z]+|#")


def _stem(word: str) -> str:
    """A light English stemmer (changing, changed, changes → chang): enough for "the same word"
    in another form to compare equal; never shown to anyone."""
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # cancell → cancel
    return word


def _content_tokens(text: str) -> list[str]:
    tokens = _TOKEN.findall(_ZH_FUNCTION_WORDS.sub(" ", text))
    return [
        t if t >= "\u2e80" else _stem(t)
        for t in tokens
        if t not in _STOPWORDS and t not in _ZH_FUNCTION
    ]


def _minimal_pair(a: list[str], b: list[str]) -> bool:
    """The content tokens differ in one place only, and that place is small: one word replaced
    ("delivery" / "billing address"), or added beside at least two
    shared ones (one word added:
    "change to the pro account" / "change the info on the pro account"), or in
    Chinese one character replaced (申请退货 / 申请换货)."""
    if a == b or not a or not b:
        return False
    ops = [
        op
        for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    if len(ops) != 1:
        return False
    kind, i1, i2, j1, j2 = ops[0]
    left, right = a[i1:i2], b[j1:j2]
    shared = len(a) - len(left)
    if all(t >= "\u2e80" for t in left + right):
        return kind == "replace" and len(left) == len(right) == 1 and shared >= 2
    if kind != "replace":
        return INSERTIONS and len(left) + len(right) == 1 and shared >= 2
    return len(left) == len(right) == 1 and shared >= 1


# --- the signature -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """What the guards compare. Holds no raw personal value: entities are keyed hashes, and
    ``tokens`` are the content words of the *masked* text."""

    entities: frozenset[str]
    negated: bool
    directions: frozenset[str]
    tokens: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "e": sorted(self.entities),
            "n": self.negated,
            "d": sorted(self.directions),
            "t": list(self.tokens),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Signature:
        entities, directions, tokens = data["e"], data["d"], data["t"]
        assert isinstance(entities, list) and isinstance(directions, list)
        assert isinstance(tokens, list)
        return cls(
            entities=frozenset(str(e) for e in entities),
            negated=bool(data["n"]),
            directions=frozenset(str(d) for d in directions),
            tokens=tuple(str(t) for t in tokens),
        )


def normalise(text: str) -> str:
    """NFKC (full-width forms), lowercase, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def signature(text: str, key: bytes) -> Signature:
    """The guard signature of a (normalised) text, entities hashed with the tenant's ``key``."""
    entities = frozenset(
        hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]
        for value in _entity_values(text)
    )
    masked = mask(text)
    return Signature(
        entities=entities,
        negated=_negations(masked) % 2 == 1,
        directions=_directions(masked),
        tokens=tuple(_content_tokens(masked)),
    )


def conflict(a: Signature, b: Signature) -> str | None:
    """Why two requests must not share an answer (``entities``, ``negation``, ``direction``,
    ``minimal pair``), or None."""
    if a.entities != b.entities:
        return "entities"
    why = polarity_conflict((a.negated, a.directions), (b.negated, b.directions))
    if why is not None:
        return why
    if _minimal_pair(list(a.tokens), list(b.tokens)):
        return "minimal pair"
    return None


# --- polarity alone (approved answers) ------------------------------------------------------------

Polarity = tuple[bool, frozenset[str]]


def polarity(text: str) -> Polarity:
    """Is the text negated, and which direction poles does it name: what a question and the
    example an approved answer was matched by must share ("I don't want a refund" is not
    matched by "I want a refund")."""
    masked = mask(normalise(text))
    return _negations(masked) % 2 == 1, _directions(masked)


def _direction_conflict(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return False
    axes = {d.split(":")[0] for d in a} & {d.split(":")[0] for d in b}
    return any(
        {d for d in a if d.startswith(axis + ":")} != {d for d in b if d.startswith(axis + ":")}
        for axis in axes
    )


def polarity_conflict(a: Polarity, b: Polarity) -> str | None:
    """``negation`` or ``direction`` when the two differ so, else None."""
    if a[0] != b[0]:
        return "negation"
    if _direction_conflict(a[1], b[1]):
        return "direction"
    return None
