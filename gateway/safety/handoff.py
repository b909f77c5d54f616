"""Should a person take this conversation over? Signals read from the customer's last turn.

Signals (``HandoffSignal.reason``), in the order one is reported when several hold:

- ``legal_threat``: a lawyer, a lawsuit or court, a chargeback or disputed charge, a complaint to
  a regulator or consumer body (FTC, BBB, trading standards, 消协, 12315, 市场监管, 黑猫投诉),
  the media or the police;
- ``human_request``: asking for a person ("转人工", "talk to a human", "real person", "your
  manager", "not a bot");
- ``anger``: abuse and strong anger (profanity, "scammers", "垃圾", "骗子", "气死"), or a message
  shouted in capitals with "!!"/"??";
- ``intent``: a phrase from the tenant's intent list (``HandoffConfig.intents``), e.g. a refund
  dispute; ``detail`` names the intent;
- ``repeated_question``: the last turn asks again what an earlier turn asked and the assistant
  answered (character-bigram overlap of the normalised texts), or says the answer missed
  ("that doesn't answer my question", "答非所问").

A match is dropped when a negation governs it in the same clause ("no need for a human",
"I'm not going to sue", "不用转人工", "我不是要投诉"). Only the last user turn is judged; earlier
turns only give the repeat signal its context. Everything here is pure and takes microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gateway.safety.entities import fold

LEGAL = "legal_threat"
HUMAN = "human_request"
ANGER = "anger"
INTENT = "intent"
REPEAT = "repeated_question"
SIGNALS: tuple[str, ...] = (LEGAL, HUMAN, ANGER, INTENT, REPEAT)


# Shipped intents (a tenant's ``intents`` replaces them; ``{}`` turns intents off): the two
# requests support teams most often keep for a person, a disputed refund and closing an account
# (a data-protection request).
DEFAULT_INTENTS: dict[str, list[str]] = {
    "refund_dispute": [
        "refund ... denied", "refund ... rejected", "refund ... refused", "refund ... declined",
        "refused my refund", "rejected my refund", "denied my refund", "declined my refund",
        "still no refund", "still haven't received my refund", "still haven't got my refund",
        "refund never came", "refund never arrived", "never got my refund",
        "want my money back", "dispute that decision", "dispute the decision",
        "don't accept the decision", "拒绝 ... 退款", "退款 ... 驳回", "退款 ... 拒绝",
        "退款 ... 被拒", "退款 ... 不通过", "退款 ... 没通过", "不给退款", "不给退",
        "退款还没到", "退款一直没到", "钱还没退", "要求退款", "必须退款", "把钱退给我",
    ],
    "close_account": [
        *(
            f"{verb} {det}account"
            for verb in (
                "close", "delete", "remove", "cancel", "terminate", "shut down", "discontinue",
                "deactivate", "get rid of", "end", "stop", "invalidate", "closing", "deleting",
                "terminating", "cancelling", "canceling",
            )
            for det in ("my ", "the ", "this ", "our ", "an ", "")
        ),
        *(
            f"account {verb}"
            for verb in (
                "deleted", "closed", "terminated", "to be deleted", "to be closed",
                "be terminated", "be deleted", "be closed",
            )
        ),
        "delete my data", "remove my data", "erase my data", "delete all my data",
        "delete my personal", "注销账号", "注销账户", "注销帐号", "注销我的账", "销户",
        "删除我的信息", "删除我的数据", "删除我的个人信息", "删除我的所有信息",
    ],
}  # fmt: skip


class HandoffConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tenant's handoff settings.

    ``intents`` maps an intent name to phrases; a phrase matches case-insensitively anywhere in
    the last user turn, and ``...`` inside it stands for up to 40 characters of the same
    sentence ("refund ... denied", "拒绝 ... 退款").
    """

    signals: tuple[str, ...] = SIGNALS
    intents: dict[str, list[str]] = msgspec.field(default_factory=lambda: dict(DEFAULT_INTENTS))
    repeat_similarity: Annotated[float, Meta(gt=0, le=1)] = 0.9
    repeat_min_chars: Annotated[int, Meta(ge=1)] = 6

    def __post_init__(self) -> None:
        unknown = set(self.signals) - set(SIGNALS)
        if unknown:
            raise ValueError(
                f"unknown handoff signal(s) {', '.join(sorted(unknown))}; choose from "
                f"{', '.join(SIGNALS)}"
            )
        for name, phrases in self.intents.items():
            if not name or not all(p.strip(" .") for p in phrases):
                raise ValueError(f"intent {name!r}: names and phrases must not be empty")


@dataclass(frozen=True, slots=True)
class HandoffSignal:
    """Why a person should take over: the signal, and what raised it (the matched words, or
    the intent's name)."""

    reason: str
    detail: str

    @property
    def header_value(self) -> str:
        """For ``x-switchboard-handoff``: the reason, ``intent:NAME`` for an intent."""
        return f"{INTENT}:{self.detail}" if self.reason == INTENT else self.reason


# --- text --------------------------------------------------------------------------------------

_CLAUSE = re.compile(r"[,.;!?\n，。；！？]+|\s(?:but|however|though)\s|但是|不过|可是")
_NEGATION_BEFORE = re.compile(
    r"(?:\b(?:no|not|never|without|don'?t|do not|doesn'?t|does not|didn'?t|won'?t|isn'?t|"
    r"am not|i'?m not|no need|needn'?t|nobody)\b"
    # "I don't know how to reach a person", "I don't understand, get me an agent": the negation
    # is about something else
    r"(?! (?:know|understand|get it|see how|get what)\b)"
    r"|不用|不需要|不必|无需|没有|没|不是|别|不要|不想)"
    r"[^,.;!?，。；！？]*$"
)
_NEGATION_AFTER = re.compile(
    r"\s*(?:is not|isn'?t|was not|wasn'?t|are not|aren'?t)\s+(?:needed|necessary|required)"
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def messages_of(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conversation of a ``{"messages"}`` or ``{"text"}`` row."""
    messages = row.get("messages")
    if isinstance(messages, list):
        return [m for m in messages if isinstance(m, dict)]
    return [{"role": "user", "content": str(row.get("text") or "")}]


_NEGATION_REACH = 24  # "if I don't get my money back by Friday I'm calling my lawyer": too far


def _negated(text: str, start: int, end: int) -> bool:
    clause_start = max(0, start - _NEGATION_REACH)
    for m in _CLAUSE.finditer(text, clause_start, start):
        clause_start = m.end()
    if _NEGATION_BEFORE.search(text, clause_start, start):
        return True
    if start > 0 and text[start - 1] == "不":  # "不要人工", "不转人工"
        return True
    return _NEGATION_AFTER.match(text, end) is not None


def _first(
    patterns: _Lexicon,
    text: str,
    *,
    negatable: bool = True,
    procedural: re.Pattern[str] | None = None,
) -> str | None:
    """The first match not negated (and, with ``procedural``, not inside a question about how
    things work: "how do I dispute a charge?", "do I need to talk to an agent to ...?")."""
    for m in patterns.finditer(text):
        if negatable and _negated(text, m.start(), m.end()):
            continue
        if procedural is not None and procedural.match(text, _clause_start(text, m.start())):
            continue
        return m.group()
    return None


def _clause_start(text: str, pos: int) -> int:
    # a clause longer than 200 characters is not a question about procedure anyway
    start = max(0, pos - 200)
    for m in _CLAUSE.finditer(text, start, pos):
        start = m.end()
    return start


# A clause that asks how something works is not a threat or a request, whatever it names.
_LEGAL_PROCEDURAL = re.compile(
    r"\s*(?:how|can i|could i|can we|where|what|when|is it possible|do i|should i|may i"
    r"|am i able)\b"
    r"|\s*(?:如何|怎么|怎样|在哪|哪里|可以)"
)
_HUMAN_PROCEDURAL = re.compile(
    r"\s*(?:do i (?:need|have) to|is it necessary to|must i)\b"
    # asking for opening hours, anywhere before the request: "at what time can I reach support"
    r"|[^,.;!?，。；！？]*\b(?:what (?:time|hours)|when can i|opening hours|business hours)\b"
)


class _Lexicon:
    """A pattern, and words at least one of which every match of it contains.

    Speed matters here (every request): a message holding none of the trigger words (most) is
    not scanned at all (``word in text`` costs tens of nanoseconds). The alternatives are then
    compiled in up to three patterns the regex engine can skip through quickly: those starting
    with ``\\b`` as one ``\\b(?:...)`` (tried at word starts only), those starting with a
    literal character (the engine jumps to those characters), and the rest. Patterns run on
    folded, lower-cased text (no IGNORECASE: it slows every scan).
    """

    def __init__(self, triggers: tuple[str, ...], *parts: str) -> None:
        self.triggers = triggers
        word, literal, other = [], [], []
        for alternative in (e for p in parts for a in _alternatives(p) for e in _expanded(a)):
            if alternative.startswith("\\b"):
                word.append(alternative[2:])
            elif alternative[0] not in "\\^([.?*+{$|":
                literal.append(alternative)
            else:
                other.append(alternative)
        self.patterns = tuple(
            re.compile(pattern)
            for pattern in (
                "\\b(?:" + "|".join(word) + ")" if word else "",
                "|".join(literal),
                "|".join(other),
            )
            if pattern
        )

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        if not any(t in text for t in self.triggers):
            return iter(())
        if len(self.patterns) == 1:
            return self.patterns[0].finditer(text)
        return iter(sorted((m for p in self.patterns for m in p.finditer(text)), key=_start))


def _start(match: re.Match[str]) -> int:
    return match.start()


def _expanded(alternative: str) -> list[str]:
    """``(?:a|b)rest`` as ``arest``, ``brest`` (literal-first alternatives scan faster)."""
    if not alternative.startswith("(?:"):
        return [alternative]
    depth, i, in_class = 0, 0, False
    while i < len(alternative):
        ch = alternative[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                break
        i += 1
    rest = alternative[i + 1 :]
    if i >= len(alternative) or rest[:1] in ("?", "*", "+", "{"):
        return [alternative]
    return [e for a in _alternatives(alternative[3:i]) for e in _expanded(a + rest)]


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regular expression (``a|b(c|d)|e`` -> a, b(c|d), e)."""
    out, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    out.append(pattern[start:])
    return [a for a in out if a]


def _any(triggers: tuple[str, ...], *parts: str) -> _Lexicon:
    return _Lexicon(triggers, *parts)


# --- the signals -------------------------------------------------------------------------------

_PEOPLE = (
    r"(?:a |an |the |your |some |real |actual |live |bloody |damn |fucking |goddamn )*"
    r"(?:human(?! (?:hair|resources|rights|error|body|being))|person(?!-)|agent"
    r"|representative|rep|operator|manager|supervisor|staff|member of staff"
    r"|staff member|specialist|advisor|adviser|assistant|colleague|your team"
    r"|someone from your team|human agent"
    r"|customer (?:service|support|care)(?: agent| rep(?:resentative)?| staff| team)?"
    r"|support (?:staff|team|agent)|real agent|live agent)\b"
)
_HUMAN = _any(
    (
        "human",
        "person",
        "agent",
        "represent",
        "rep",
        "operator",
        "manager",
        "supervisor",
        "staff",
        "specialist",
        "advis",
        "colleague",
        "team",
        "customer",
        "support",
        "real ",
        "actual ",
        "live ",
        "someone",
        "somebody",
        "some one",
        "assistant",
        " bot",
        "robot",
        "machine",
        "escalat",
        *"人工 真人 活人 经理 主管 领导 负责人 机器人 客服 工作人员 专人".split(),
        *"专员 坐席 跟我 和我 给我".split(),
    ),  # fmt: skip
    r"\b(?:(?:talk|speak|chat|connect|contact|transfer|reach|escalat|forward)(?:e|es|s|ed|ing)?"
    r"|chatting|chatted"
    r"|put|get|give|need|want|like|let|have|pass|hand|prefer|call(?:ing)?|spoke|cat)"
    rf"\b(?: me| this| it| to| with| through| up| over| on| a word)*\s+(?:to |with |through to )?"
    rf"{_PEOPLE}",
    r"\b(?:real|actual|live) (?:person|human|agent|people|support|chat)\b",
    r"\b(?:talk|speak|chat|contact)\w*(?: (?:to|with))? (?:someone|somebody|some one)\b",
    r"\b(?:not|instead of|rather than) (?:a |an |this |the |your )?(?:bot|robot|machine)\b",
    r"\bstop the bot\b",
    r"\bescalate\b",
    r"\b(?:member of staff|staff member|someone|somebody|a person|an agent|a human)\b"
    r"[^.?!]{0,20}\b(?:call|contact|ring|phone|email) me\b",
    r"^\W*(?:agent|human|representative|operator|live agent|real person|person|customer service"
    r"|customer support)\W*$",
    r"\b(?:agent|human|representative|operator)\s*(?:please|pls|now)\b",
    r"转人工|转接人工|人工客服|人工服务|(?:找|(?<!需)要|接|叫|转|换|需要)人工|^\W*人工\W*$|人工[!！]",
    r"(?:找|要|让|换|来|跟|和|与|叫|接)(?:个|一个|位)?真人|真人客服|活人",
    r"(?:找|叫|要|和|跟|让)(?:你们)?(?:的)?(?:客服)?(?:经理|主管|领导|负责人)",
    r"不想(?:跟|和|与)?机器人|不要(?:跟)?机器人|别用机器人|机器人.{0,4}(?:没用|听不懂)",
    r"(?:安排|让)(?:客服|人工|工作人员|专人)(?:给我)?(?:回|打)(?:个)?电话",
    r"(?:找|要|叫|让|换|转|接|联系)(?:个|一个|位)?(?:客服人员|工作人员|客服专员|专员|坐席|人工坐席|真人客服)",
    r"(?:客服|工作人员|人)(?:来)?(?:跟|和|给)我(?:说|聊|谈|解释|打电话)",
)
# These say "I want a person" by refusing the machine: a negation is part of the request.
_HUMAN_UNNEGATABLE = _any(
    ("机器人", " bot", "robot", "machine"),
    r"不想(?:跟|和|与)?机器人|不要(?:跟)?机器人",
    r"\b(?:not|instead of|rather than) (?:a |an |this |the |your )?(?:bot|robot|machine)\b",
)
_NOT_A_ROBOT = re.compile(r"\bi(?:'m| am) not a robot\b", re.IGNORECASE)
# "Are you a real person?" asks what the assistant is, not for someone else.
_IDENTITY_QUESTION = re.compile(
    r"\b(?:are|were) you (?:a |an )?(?:real|actual|live|human)|\byou(?:'re| are) (?:a |an )?(?:real"
    r"|actual) (?:person|human)|\bam i (?:speaking|talking|chatting) (?:to|with) (?:a |an )?"
    r"(?:real|actual|live|human)|\bcould you be (?:a |an )?(?:real|actual|human)"
    r"|你是(?:真人|机器人)",
    re.IGNORECASE,
)

_LEGAL = _any(
    (
        "lawyer",
        "attorney",
        "solicitor",
        "legal",
        "court",
        "sue",
        "suing",
        "lawsuit",
        "small claims",
        "breach",
        "class action",
        "chargeback",
        "charge back",
        "disput",
        "claim",
        "case",
        "ftc",
        "bbb",
        "better business",
        "trading standards",
        "consumer protection",
        "ombudsman",
        "regulator",
        "cfpb",
        "police",
        "authorities",
        "watchdog",
        "citizens advice",
        "consumer council",
        "ofcom",
        "ofgem",
        "the press",
        "the media",
        "the news",
        "violat",
        "illegal",
        "12315",
        "12345",
        "315",
        *"消协 消费者协会 工商 监管 银保监 证监会 消保委 质监 部门 法律".split(),
        *"维权 黑猫 律师 起诉 法院 告你们 法庭 官司 仲裁 报警 曝光 媒体".split(),
        *"央视 拒付 违法".split(),
    ),  # fmt: skip
    r"\b(?:my|our|a|an) (?:lawyers?|attorneys?|solicitors?|legal (?:team|counsel|department))"
    r"\b(?! (?:office|fees?)\b)"
    r"(?=[^.?!]{0,30}\b(?:will|is going|are going|says?|said|be in touch|contact|letter|told|"
    r"has|is (?:on|handling|looking))\b)",
    r"\b(?:hear|hearing) from (?:my|our) (?:lawyers?|attorneys?|solicitors?|legal)",
    r"\blawyer(?:ing)? up\b|\blegal (?:route|steps|proceedings)\b|\bsee you in court\b",
    r"\b(?:contact\w*|call\w*|get\w*|hir\w*|consult\w*|involv\w*|speak\w* (?:to|with)"
    r"|talk\w* (?:to|with)|see|ask\w*|forward\w* (?:this|it) to|send\w* (?:this|it) to)"
    r" (?:my|a|an|our) (?:lawyers?|attorneys?|solicitors?|legal (?:team|counsel|department))\b",
    r"\blegal action\b|\blawsuit\b|\btake (?:you|this|it|them) to court\b"
    r"|\b(?:will|'ll|going to|gonna|shall|i'?d|could|can) sue\b|\bsu(?:e|ing) (?:you|your|them|the "
    r"(?:company|store|shop|seller))\b"
    r"|\bsmall claims\b|\bin court\b|\bbreach of contract\b|\bclass action\b",
    r"\bcharge ?backs?\b|\bdisput(?:e|ing) (?:the|this|that|a|my) (?:charge|payment|transaction)"
    r"|\bfraud claim\b|\b(?:open|opened|opening|file|filed|filing|raise|raised|start|started)"
    r" (?:a |an )?(?:dispute|claim|case)\b[^.?!]{0,20}\b(?:with|through|on|at)\b"
    r"|\b(?:paypal|credit card|card company|my bank|the bank|visa|mastercard|amex) "
    r"(?:dispute|claim)\b",
    r"\b(?:report|complain|complaint|file|filing|reporting)\b[^.?!]{0,40}\b(?:ftc|bbb|"
    r"better business bureau|trading standards|consumer protection|ombudsman|regulator|"
    r"attorney general|cfpb|police|authorities|watchdog|citizens advice|consumer council|"
    r"ofcom|ofgem|the press|the media|the news)\b",
    r"\bviolat\w* [^.?!]{0,30}\blaws?\b|\b(?:this is|that'?s|it'?s|is|are) (?:totally |clearly )?"
    r"illegal\b",
    r"(?:投诉|举报|告|反映)(?:到|去|给)?.{0,4}(?:消协|消费者协会|12315|12345|工商|市场监管|监管局|"
    r"银保监|证监会|金融监管|消保委|质监|有关部门|相关部门|监管部门|主管部门)",
    r"(?:向|去|到|找|打)(?:[^，。！？]{0,6})?(?:消协|消费者协会|12315|工商|市场监管|监管局|银保监|"
    r"消保委|有关部门|相关部门|监管部门|主管部门)(?:[^，。！？]{0,4})?(?:投诉|举报|反映|告)?",
    r"法律途径|法律程序|法律手段|走法律|依法维权|维权",
    r"黑猫投诉|(?:请|找|咨询|联系|委托|问)(?:了)?(?:个)?律师|律师(?:已经|说)|(?:发|寄|收到)律师函"
    r"|起诉|法院|告你们|上法庭|打官司|仲裁|报警|曝光|媒体|央视|315晚会|拒付|违法",
)

_ANGER = _any(
    (
        "uck",
        "shit",
        "wtf",
        "crap",
        "damn",
        "bastard",
        "idiot",
        "moron",
        "incompetent",
        "stupid",
        "useless",
        "pathetic",
        "ridiculous",
        "unbelievable",
        "scam",
        "fraudster",
        "rip",
        "liar",
        "lying",
        "disgusting",
        "outrageous",
        "unacceptable",
        "angry",
        "furious",
        "livid",
        "pissed",
        "mad",
        "fed up",
        "sick",
        "worst",
        "shame on you",
        "joke",
        "kidding",
        "hate you",
        "screw",
        "never",
        "enough",
        "last straw",
        "the hell",
        "bloody",
        "sucks",
        "disgrace",
        "appalling",
        "atrocious",
        "thieves",
        "con artist",
        "cheated",
        "clowns",
        "outraged",
        "you people",
        "sb",
        "tmd",
        *"垃圾 骗 傻 煞笔 妈 特么 尼玛 操你 草泥马 卧槽 滚 气 过分 破".split(),
        *"废物 坑 黑店 无良 恶心 忍无可忍 受够了 去死 混蛋 王八蛋 有病".split(),
        *"敷衍 差劲 奸商 火大 可恶 无耻 离谱 搞什么 玩意 烂 极差 再也不".split(),
        *"欺骗 强盗 流氓 忽悠".split(),
    ),  # fmt: skip
    r"\bf+u+c+k\w*|\bshit\w*|\bwtf\b|\bbullshit\b|\bcrap\b|\bdamn it\b|\bgoddamn\b|\bbastards?\b",
    r"\bidiot\w*|\bmorons?\b|\bincompetent\b|\bstupid (?:bot|company|service|people|machine|"
    r"website|app|store|shop|system)\b|\buseless\b|\bpathetic\b|\bridiculous\b|\bunbelievable\b",
    r"\bscam(?:mer)?s\b|\bscammed\b"
    r"|\b(?:this is|it'?s|that'?s|you'?re|what a|total|complete|such a|a fucking) (?:a )?scam\b"
    r"|\bfraudsters?\b|\brip[- ]?off\b|\bliars?\b|\b(?:you(?:'re| are)|stop|keep) lying\b"
    r"|\bdisgusting\b|\boutrageous\b"
    r"|\bunacceptable\b",
    r"\b(?:i'?m|i am|so|very|really|extremely|fucking) (?:angry|furious|livid|pissed|mad)\b"
    r"|\bfurious\b|\blivid\b|\bpissed off\b|\bfed up\b|\bsick (?:and tired )?of\b"
    r"|\bworst (?:customer )?(?:service|company|experience)\b|\bshame on you\b"
    r"|\bjoke of a\b|\bare you kidding\b|\bhate you\b|\bscrew (?:you|this|it|that)\b"
    r"|\b(?:is|are|what|such|total|complete|fucking) (?:a )?(?:total |complete |fucking )?joke\b"
    r"|\bworst \w+ ever\b"
    r"|\bnever (?:order|buy|shop|use)\w* (?:from you |here |with you )?again\b"
    r"|\b(?:i'?ve|i have|we'?ve) had enough\b|\bhad enough of (?:this|you)\b"
    r"|\benough is enough\b|\blast straw\b|\bwhat the hell\b"
    r"|\bbloody\b|\bsucks\b|\bdisgrace\w*|\bappalling\b|\batrocious\b"
    r"|\b(?:you|you'?re|you are|bunch of|such) (?:\w+ )?thieves\b"
    r"|\bcon artists?\b|\bcheated\b|\bclowns\b|\boutraged\b|\bfed up\b|\byou people\b",
    r"垃圾(?!桶|袋|箱|车|分类|处理|邮件|短信|清理|站)|骗子|骗人|骗钱|傻逼|傻[bB]|煞笔|傻叉|(?<![a-z])sb(?![a-z])"
    r"|妈的|他妈|特么|tmd|尼玛|你妈|操你|草泥马|卧槽|滚(?!筒|动|轮|珠|烫|刀|梯)|气死|太过分|什么破|"
    r"破(?:客服|服务|平台|店|公司|系统|东西)|废物|坑人|坑爹|黑店|无良|恶心|忍无可忍|受够了|去死|混蛋|"
    r"王八蛋|有病吧|脑子有病|敷衍|差劲|奸商|很生气|非常生气|太生气|火大|气炸|气人|可恶|无耻|太离谱|"
    r"搞什么|什么玩意|烂透|太烂|极差|再也不(?:买|来|用)|欺骗消费者|坑消费者|强盗|流氓|忽悠",
)
_SHOUT_LETTERS = re.compile(r"[A-Za-z]")
_SHOUT_MARKS = re.compile(r"[!?]{2,}")

_REPEAT_PHRASES = _any(
    ("answer", "asked", "time", "again", *"答非所问 回答 我问的是 再问 问了 说了多少".split()),
    r"\b(?:(?:does|did)n'?t|does not|did not|you (?:didn'?t|did not|never)) answer"
    r"(?: my| the)? question\b",
    r"\bi (?:already|just) asked\b|\bi asked (?:you )?(?:already|before|twice)\b"
    r"|\bfor the (?:second|third|last) time\b|\bagain[:,] \w",
    r"答非所问|没(?:有)?回答我的问题|我问的是|我再问一(?:遍|次)|问了(?:好几|几|多少)(?:遍|次)"
    r"|说了多少(?:遍|次)",
)
_NORMALISE = re.compile(r"[\W_]+")
# Words that ask nothing: dropped before comparing two questions, so "所以支持退货吗" repeats
# "你们支持退货吗" and "好的谢谢" twice is not a repeated question.
_FILLERS = re.compile(
    r"\b(?:so|but|ok|okay|again|please|pls|i mean|then|really|actually|thanks|thank you|hi|hello"
    r"|yes|no|fine)\b|到底|究竟|所以|请问|那么|还是|就是|我问|你们|好的|谢谢|您好|你好|那|嗯|哦|啊|呢|吗|吧|呀|了"
)
_CJK_CHAR = re.compile("[\u4e00-\u9fff]")


def _normalise(text: str) -> str:
    return _NORMALISE.sub("", _FILLERS.sub(" ", fold(text).lower()))


def _weight(normalised: str) -> int:
    """Length with Chinese characters counted twice (they carry about a word each)."""
    return len(normalised) + len(_CJK_CHAR.findall(normalised))


def _bigrams(text: str) -> set[str]:
    return {text[i : i + 2] for i in range(len(text) - 1)}


def similarity(earlier: str, later: str) -> float:
    """How much of an earlier question the later turn contains: the share of the earlier
    text's character bigrams (normalised: folded, lower-cased, no punctuation or spaces) found
    in the later one, counted only when the later turn is not mostly something else."""
    a, b = _normalise(earlier), _normalise(later)
    if not a or not b:
        return 0.0
    ga, gb = _bigrams(a), _bigrams(b)
    if not ga or not gb:
        return 1.0 if a == b else 0.0
    return len(ga & gb) / len(ga)


def _repeated(
    messages: Sequence[Mapping[str, Any]], last: int, config: HandoffConfig
) -> str | None:
    if not any(messages[i].get("role") == "assistant" for i in range(last)):
        return None  # nothing was answered yet
    text = _text(messages[last].get("content"))
    if _weight(_normalise(text)) < config.repeat_min_chars:
        return None
    phrase = _first(_REPEAT_PHRASES, fold(text).lower(), negatable=False)
    answered = False
    for i in range(last - 1, -1, -1):
        role = messages[i].get("role")
        if role == "assistant":
            answered = True
        elif role == "user" and answered:
            earlier = _text(messages[i].get("content"))
            if _weight(_normalise(earlier)) < config.repeat_min_chars:
                continue
            if similarity(earlier, text) >= config.repeat_similarity:
                return earlier[:80]
    if phrase is not None and answered:
        return phrase
    return None


def _intent(text: str, config: HandoffConfig) -> str | None:
    for name, pattern in _intent_patterns(config).items():
        if _first(pattern, text) is not None:
            return name
    return None


_INTENT_CACHE: dict[int, tuple[HandoffConfig, dict[str, _Lexicon]]] = {}


def _intent_patterns(config: HandoffConfig) -> dict[str, _Lexicon]:
    cached = _INTENT_CACHE.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    patterns = {}
    for name, phrases in config.intents.items():
        alternatives = []
        triggers = []
        for phrase in phrases:
            words = [fold(p).strip().lower() for p in phrase.split("...") if p.strip()]
            triggers.append(words[0])
            body = r"[^.;!?。；！？\n]{0,40}?".join(re.escape(w) for w in words)
            ascii_edges = words[0][:1].isascii() and words[0][:1].isalnum()
            alternatives.append(rf"\b{body}" if ascii_edges else body)
        patterns[name] = _Lexicon(tuple(triggers), *alternatives)
    if len(_INTENT_CACHE) > 256:
        _INTENT_CACHE.clear()
    _INTENT_CACHE[id(config)] = (config, patterns)
    return patterns


def _shouting(text: str) -> bool:
    if not _SHOUT_MARKS.search(text):
        return False
    letters = _SHOUT_LETTERS.findall(text)
    if len(letters) < 12:
        return False
    return sum(1 for c in letters if c.isupper()) / len(letters) >= 0.7


DEFAULT_CONFIG = HandoffConfig()


def handoff_signals(
    messages: Sequence[Mapping[str, Any]], config: HandoffConfig = DEFAULT_CONFIG
) -> list[HandoffSignal]:
    """Every signal the customer's last turn raises, in :data:`SIGNALS` order."""
    last = next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None
    )
    if last is None:
        return []
    raw = _text(messages[last].get("content"))
    if not raw.strip():
        return []
    text = fold(raw).lower()
    wanted = config.signals
    found: list[HandoffSignal] = []
    if LEGAL in wanted and (hit := _first(_LEGAL, text, procedural=_LEGAL_PROCEDURAL)) is not None:
        found.append(HandoffSignal(LEGAL, hit))
    if HUMAN in wanted:
        hit = _first(_HUMAN_UNNEGATABLE, text, negatable=False)
        if hit is not None and _NOT_A_ROBOT.search(text):
            hit = None
        if hit is None:
            hit = _first(_HUMAN, text, procedural=_HUMAN_PROCEDURAL)
            if hit is not None and _IDENTITY_QUESTION.search(text):
                hit = None
        if hit is not None:
            found.append(HandoffSignal(HUMAN, hit))
    if ANGER in wanted:
        hit = _first(_ANGER, text)
        if hit is None and _shouting(fold(raw)):
            hit = "shouting"
        if hit is not None:
            found.append(HandoffSignal(ANGER, hit))
    if INTENT in wanted and config.intents and (name := _intent(text, config)) is not None:
        found.append(HandoffSignal(INTENT, name))
    if REPEAT in wanted and (hit := _repeated(messages, last, config)) is not None:
        found.append(HandoffSignal(REPEAT, hit))
    return found


def detect_handoff(
    messages: Sequence[Mapping[str, Any]], config: HandoffConfig = DEFAULT_CONFIG
) -> HandoffSignal | None:
    """The handoff signal of the customer's last turn (the first in :data:`SIGNALS` order when
    several hold), or None."""
    signals = handoff_signals(messages, config)
    return signals[0] if signals else None
