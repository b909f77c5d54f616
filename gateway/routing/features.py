"""Fast, deterministic features of a chat conversation for the difficulty classifier.

Two kinds, both cheap enough for a whole decision in tens of microseconds:

* **numeric** features (``NUMERIC_NAMES``): length, language, turns, quantities, reasoning steps
  (relations between quantities, time, conditions, actors), constraints, code, question type and
  multiple-choice layout. They describe *how hard the task looks*, not *what it is about*, so they
  carry over to other models and to topics the labels never covered. English and Chinese cue
  words feed the same counters, so a Chinese prompt is read with the weights English taught.
* **hashed** lexical tokens (``Features.tokens``): lowercased words and word bigrams (numbers
  folded to ``<num>``) and, for Chinese, character unigrams and bigrams. ``hashed_tokens`` maps
  them to buckets with CRC-32, which unlike ``hash()`` is stable across processes.

The question is the last user turn with text; the rest of the conversation counts through its
length, turn count and system prompt size. Only the first ``HEAD`` and last ``TAIL`` characters of
the question are scanned, so a 200k-token prompt costs about what a 4k-character one does; the
length features still see the whole text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zlib import crc32

__all__ = [
    "FEATURE_SET",
    "NUMERIC_NAMES",
    "Features",
    "conversation_parts",
    "extract",
    "hashed_tokens",
]

# Bump when the meaning or order of the numeric features, or the tokens, change: the weights
# file names the feature set it was trained with and the classifier refuses another one.
FEATURE_SET = "sb-features-2"

HEAD = 3000
TAIL = 1000
# word-length features of a text without Latin words (Chinese): typical English values
NEUTRAL_WORD_LEN = 4.7
NEUTRAL_LONG_WORDS = 0.07

# --- tokenizing -------------------------------------------------------------------------------
_PUNCT = '!"#$%&()*+,./:;<=>?@[\\]^_`{|}~“”‘’«»，。！？、；：（）《》【】「」…—·\t\r\n'
_SPACES = str.maketrans({c: " " for c in _PUNCT})
_CJK_START = "\u2e80"  # everything from the CJK radicals block up is read as CJK

# --- precompiled patterns ---------------------------------------------------------------------
_SEGMENTS = re.compile(r"[\u2e80-\U0002ffff]+|[a-z][a-z'\-]*|\d+(?:\.\d+)?")
_HAS_DIGIT = re.compile(r"\d").search
_ZH_NUMBER = re.compile(r"[零一二两三四五六七八九十百千万亿半]+")
_CODE = re.compile(
    r"```|^\s*(?:def|class|import|from|return|public|private|static|const|let|var|function)\b"
    r"|[{};][ \t]*$|#include|=>|</?[a-z]+[ >]|\bSELECT\b",
    re.M,
)
# "I and II only", "II, III": the leading numeral is written as I(I|II|V)? after a lookbehind for
# the word boundary (the same matches as \b(?:I|II|III|IV)\b) so the search can skip to each "I"
# instead of trying the alternation at every position (20x faster on English text).
_ROMAN = re.compile(r"I(?<!\w.)(?:II|I|V)?\b(?:\s*(?:,|and|only)\s*(?:I|II|III|IV)\b)+")
_BLANK = re.compile(r"_{2,}|\(\s*\)|（\s*）")
_COMPOUND_OPTION = re.compile(r"^[\w' ]{2,14},[ \t]*[\w' ]{2,14}$")


def _words(spec: str) -> tuple[str, ...]:
    return tuple(spec.split())


# English cue words by class; a word counts for the first class that names it.
_WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "numword": _words(
        "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
        "forty fifty hundred thousand million billion half twice double triple thrice dozen "
        "dozens quarter third thirds fourth fifth pair pairs twins triplets once"
    ),
    "relation": _words("times ratio proportion fraction percent percentage"),
    "remaining": _words("rest remaining remainder left still leftover other others"),
    "temporal": _words(
        "ago now currently later after before next previous last first second then until "
        "earlier initially finally yesterday tomorrow today"
    ),
    "condition": _words("if when assuming suppose unless whether while given"),
    "pronoun": _words("he she they his her their them him it its hers theirs"),
    "unit": _words(
        "second seconds minute minutes hour hours day days week weeks month months year years "
        "mile miles meter meters km kilometers feet foot inch inches pound pounds kg gram grams "
        "liter liters gallon gallons cup cups dollar dollars cent cents mph"
    ),
    "rate": _words("each every per apiece daily weekly monthly hourly yearly annually"),
    "total": _words("total altogether combined together sum overall"),
    "calc": _words("calculate find determine compute estimate solve"),
    "negation": _words(
        "not no never none except neither nor cannot can't isn't doesn't don't won't without "
        "least false incorrect untrue invalid"
    ),
    "constraint": _words(
        "must should exactly only most within under limit maximum minimum format json bullet "
        "bullets sentences paragraphs concise brief list table steps"
    ),
    "code": _words(
        "code function python javascript java sql program algorithm implement class array "
        "string bug compile regex api script html css rust golang complexity recursion"
    ),
    "math": _words(
        "prove proof equation integral derivative matrix probability polynomial prime sqrt log "
        "theorem integer integers digits remainder divisible factor sequence series expected "
        "variance"
    ),
    "create": _words(
        "write compose story poem essay blog email draft imagine describe create generate "
        "design plan letter song"
    ),
    "explain": _words(
        "explain why discuss compare contrast analyze analyse evaluate justify argue critique "
        "assess"
    ),
    "wh": _words("what which who whom whose where how"),
    "hedge": _words("best most likely primarily mainly generally usually typically"),
}

# English two-word cues; each also counts for the class named.
_BIGRAM_CLASSES: dict[str, tuple[str, ...]] = {
    "relation": (
        "as much",
        "as many",
        "as long",
        "as old",
        "times as",
        "more than",
        "less than",
        "fewer than",
        "of the",
        "of his",
        "of her",
        "of their",
        "of its",
    ),
    "rate": ("a day", "a week", "an hour", "a month", "a year", "a piece"),
    "total": ("in all", "in total"),
    "howmany": ("how many", "how much", "how long", "how far", "how old"),
    "constraint": ("at least", "at most", "no more", "no less", "up to"),
}

# Chinese cue substrings, counted into the same classes.
_ZH_CLASSES: dict[str, tuple[str, ...]] = {
    "numword": ("一半", "两倍", "三倍", "一打", "双胞胎", "一对"),
    "relation": ("倍", "比", "百分之", "分之", "多出", "少于", "多于", "的一半"),
    "remaining": ("剩", "其余", "其他", "还有", "余下"),
    "temporal": ("以前", "之前", "之后", "以后", "现在", "目前", "然后", "最后", "首先", "年前"),
    "condition": ("如果", "假如", "假设", "当", "除非", "是否"),
    "pronoun": ("他", "她", "它", "他们", "她们"),
    "unit": ("元", "块钱", "小时", "分钟", "天", "星期", "个月", "年", "米", "公里", "斤", "克"),
    "rate": ("每",),
    "total": ("一共", "总共", "合计", "总计", "总和"),
    "calc": ("计算", "求", "算出", "估算"),
    "negation": ("不", "没", "无", "除了", "错误", "否"),
    "constraint": ("必须", "至少", "最多", "只", "不超过", "格式", "字以内", "列表", "步骤"),
    "code": ("代码", "函数", "程序", "算法", "实现", "编程", "接口", "报错", "脚本"),
    "math": ("证明", "方程", "积分", "导数", "矩阵", "概率", "质数", "余数", "数列"),
    "create": ("写", "创作", "故事", "诗", "文章", "邮件", "设计", "生成", "描述"),
    "explain": ("为什么", "解释", "分析", "比较", "评价", "说明", "原因"),
    "wh": ("什么", "哪", "谁", "怎么", "如何"),
    "hedge": ("最可能", "主要", "通常", "一般"),
    "howmany": ("多少", "几个", "几天", "多久", "多长", "几"),
}

_CLASS_NAMES: tuple[str, ...] = (*_WORD_CLASSES, "howmany")
_CLASS_INDEX = {name: i for i, name in enumerate(_CLASS_NAMES)}
_WORD_TO_CLASS: dict[str, int] = {}
for _name, _items in _WORD_CLASSES.items():
    for _w in _items:
        _WORD_TO_CLASS.setdefault(_w, _CLASS_INDEX[_name])
_BIGRAM_TO_CLASS: dict[str, int] = {
    _p: _CLASS_INDEX[_name] for _name, _items in _BIGRAM_CLASSES.items() for _p in _items
}
_BIGRAM_FIRST = frozenset(p.split()[0] for p in _BIGRAM_TO_CLASS)
# Chinese cues by their first character, each with its class index
_ZH_BY_FIRST: dict[str, list[tuple[int, str]]] = {}
for _name, _items in _ZH_CLASSES.items():
    for _cue in _items:
        _ZH_BY_FIRST.setdefault(_cue[0], []).append((_CLASS_INDEX[_name], _cue))

_BASE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_context_chars",
    "log_system_chars",
    "log_turns",
    "cjk_ratio",
    "tools",
    "images",
    "numbers",
    "distinct_numbers",
    "decimals",
    "big_numbers",
    "percent",
    "fractions",
    "money_sign",
    "sentences",
    "words_per_sentence",
    "commas",
    "ands",
    "question_marks",
    "math_symbols",
    "code_lines",
    "upper_words",
    "names",
    "mean_word_len",
    "long_words",
    "newlines",
    "multiple_choice",
    "option_len",
    "option_numeric",
    "compound_options",
    "roman_combo",
    "statements",
    "blank",
    "stem_no_question",
)
NUMERIC_NAMES: tuple[str, ...] = (*_BASE_NAMES, *(f"kw_{name}" for name in _CLASS_NAMES))
_N = len(NUMERIC_NAMES)
_KW0 = len(_BASE_NAMES)
_NUM_TOKEN = "<num>"


@dataclass(frozen=True, slots=True)
class Features:
    """The features of one conversation: numeric values (``NUMERIC_NAMES``) and lexical tokens."""

    numeric: tuple[float, ...]
    tokens: tuple[str, ...]

    def named(self) -> dict[str, float]:
        return dict(zip(NUMERIC_NAMES, self.numeric, strict=True))


def _text_of(content: object) -> tuple[str, bool]:
    """A message content's text, and whether it carried a non-text (image, audio, file) part."""
    if content is None:
        return "", False
    if isinstance(content, str):
        return content, False
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        texts: list[str] = []
        media = False
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
                elif part.get("type") not in (None, "text"):
                    media = True
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts), media
    return "", False


def conversation_parts(messages: Sequence[object]) -> tuple[str, int, int, int, bool]:
    """``(question, other_chars, system_chars, turns, media)`` of a conversation.

    The question is the last user turn with text (the last turn with text if no user turn has
    any). ``other_chars`` counts the non-system turns other than the question. Malformed
    messages (not mappings, odd content) are skipped, never raised on.
    """
    question = ""
    fallback = ""
    chars = 0
    system = 0
    turns = 0
    media = False
    for message in messages:
        # exact-type checks first: a long conversation is hundreds of plain dicts and strings,
        # and the ABC isinstance checks cost more than the rest of the loop
        if type(message) is not dict and not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if type(content) is str:
            text = content
        else:
            text, has_media = _text_of(content)
            media = media or has_media
        role = message.get("role")
        if role in ("system", "developer"):
            system += len(text)
            continue
        turns += 1
        chars += len(text)
        if not text or text.isspace():
            continue
        if role == "user":
            question = text
        fallback = text
    if not question:
        question = fallback
    return question, chars - len(question), system, turns, media


_STRIP = "\"'“”‘’«»()[]{}<>*_`~#@&^$€£¥:;,.!?…"
_SENTENCE_MARKS = ".?!;"
_ASCII_LOWERCASE = frozenset("abcdefghijklmnopqrstuvwxyz")
_OPTION_LETTERS = frozenset("ABCDEFGHabcdefgh")


def _options(text: str) -> tuple[int, float, float, float, bool]:
    """Multiple-choice layout: ``(options, mean option chars, numeric share, compound share,
    stem has no question mark)``; zeros when the text has fewer than two option lines."""
    bodies: list[str] = []
    stem_end = -1
    lines = text.splitlines()
    letters = _OPTION_LETTERS
    for k, line in enumerate(lines):
        # _is_option_line, inlined: it runs on every line of every multi-line prompt
        s = line.lstrip()
        if len(s) < 2:
            continue
        first = s[0]
        if first == "(":
            if len(s) < 3 or s[1] not in letters or s[2] != ")":
                continue
            body = s[3:]
        elif first in letters and s[1] in ".)：:" and (len(s) == 2 or s[2] in " \t"):
            body = s[2:]
        else:
            continue
        if stem_end < 0:
            stem_end = k
        bodies.append(body.strip())
    if len(bodies) < 2:
        return 0, 0.0, 0.0, 0.0, False
    lens = 0
    numeric = 0
    compound = 0
    # cheap tests first: most option sets have no digit at all, most options no comma (which
    # the compound pattern needs)
    any_digit = _HAS_DIGIT("\n".join(bodies)) is not None
    for body in bodies:
        lens += len(body)
        if any_digit and _HAS_DIGIT(body):
            numeric += 1
        if "," in body and _COMPOUND_OPTION.match(body):
            compound += 1
    k = len(bodies)
    stem = "\n".join(lines[:stem_end])
    return k, lens / k, numeric / k, compound / k, "?" not in stem and "？" not in stem


def _count(text: str, marks: str) -> int:
    """Occurrences of any of the characters ``marks`` in ``text``."""
    return sum(map(text.count, marks))


def extract(
    messages: Sequence[object], tools: bool = False, *, with_tokens: bool = True
) -> Features:
    """Features of a conversation (OpenAI-style messages: role + content string or parts).

    ``with_tokens=False`` skips the lexical tokens (``Features.tokens`` is then empty): a model
    without a hashed part does not need them.
    """
    question, other_chars, system_chars, turns, media = conversation_parts(messages)
    full_len = len(question)
    text = question if full_len <= HEAD + TAIL else question[:HEAD] + "\n" + question[-TAIL:]
    v = [0.0] * _N
    kw = [0] * len(_CLASS_NAMES)
    tokens: list[str] = []
    add = tokens.append
    w2c = _WORD_TO_CLASS
    b2c = _BIGRAM_TO_CLASS
    bfirst = _BIGRAM_FIRST
    strip = _STRIP
    marks = _SENTENCE_MARKS
    lowercase = _ASCII_LOWERCASE
    numbers: list[str] = []

    cjk_chars = 0
    latin_words = 0
    latin_len = 0
    long_words = 0
    upper_words = 0
    names = 0
    sentences = 0
    prev = ""
    ascii_text = text.isascii()
    for line in text.splitlines():
        sentence_start = True
        raws = line.split()
        # counted as Latin words up front; the loop takes back the few that are not
        latin_words += len(raws)
        for raw in raws:
            if not ascii_text and not raw.isascii() and max(raw) >= _CJK_START:
                latin_words -= 1
                # Chinese (or mixed) run: CJK character unigrams and bigrams, Latin words
                # (cue words count), digits as numbers.
                for run in _SEGMENTS.findall(raw.lower().translate(_SPACES)):
                    first = run[0]
                    if first >= _CJK_START:
                        cjk_chars += len(run)
                        if with_tokens:
                            tokens.extend(run)
                            tokens.extend([run[k : k + 2] for k in range(len(run) - 1)])
                    elif first.isdigit():
                        numbers.append(run)
                        if with_tokens:
                            add(_NUM_TOKEN)
                    else:
                        latin_words += 1
                        latin_len += len(run)
                        c = w2c.get(run)
                        if c is not None:
                            kw[c] += 1
                        if with_tokens:
                            add(run)
                prev = ""
                sentence_start = True
                continue
            w = raw.strip(strip)
            if not w:
                latin_words -= 1
                sentence_start = sentence_start or raw[-1] in marks
                continue
            # most words start with a lower-case ASCII letter: neither a number nor capitalized,
            # decided with one set lookup instead of two method calls
            if w[0] not in lowercase:
                first = w[0]
                if first.isdigit():
                    latin_words -= 1
                    numbers.append(w)
                    if with_tokens:
                        add(_NUM_TOKEN)
                        if prev:
                            add(prev + " " + _NUM_TOKEN)
                    prev = _NUM_TOKEN
                    if raw[-1] in marks:
                        sentences += 1
                        sentence_start = True
                    else:
                        sentence_start = False
                    continue
                if first.isupper():
                    if len(w) > 1 and w.isupper():
                        upper_words += 1
                    elif not sentence_start:
                        names += 1
                    w = w.lower()
            n = len(w)
            latin_len += n
            if n >= 10:
                long_words += 1
            c = w2c.get(w)
            if c is not None:
                kw[c] += 1
            if with_tokens:
                add(w)
                if prev:
                    add(prev + " " + w)
            if prev in bfirst:
                c = b2c.get(prev + " " + w)
                if c is not None:
                    kw[c] += 1
            prev = w
            if raw[-1] in marks:
                sentences += 1
                sentence_start = True
            else:
                sentence_start = False

    zh_numbers = 0
    if cjk_chars:
        # only the cues whose first character occurs in the text can be counted
        for first in _ZH_BY_FIRST.keys() & set(text):
            for index, cue in _ZH_BY_FIRST[first]:
                kw[index] += text.count(cue)
        zh_numbers = len(_ZH_NUMBER.findall(text))
        sentences += _count(text, "。！？；")

    log = math.log1p
    length = len(text)
    scale = full_len / length if length else 1.0
    n_words = latin_words + cjk_chars * 0.6
    if not sentences and n_words:
        sentences = 1
    lower_count = text.lower().count
    count_in = text.count
    if ascii_text:
        # none of the non-ASCII marks and cue words can occur: skip their counts
        zh_percent = zh_fraction = zh_and = 0
        commas = count_in(",")
        question_marks = count_in("?")
    else:
        zh_percent = count_in("百分")
        zh_fraction = count_in("分之")
        zh_and = count_in("和") + count_in("并且")
        commas = _count(text, ",，、")
        question_marks = _count(text, "?？")
    # English-equivalent characters: a Chinese character carries about three Latin ones.
    v[0] = log(full_len + 2.0 * cjk_chars * scale)
    v[1] = log(n_words * scale)
    v[2] = log(other_chars)
    v[3] = log(system_chars)
    v[4] = log(turns)
    v[5] = cjk_chars / length if length else 0.0
    v[6] = 1.0 if tools else 0.0
    v[7] = 1.0 if media else 0.0
    v[8] = log(len(numbers) + zh_numbers)
    v[9] = log(len(set(numbers)))
    v[10] = log(sum(1 for x in numbers if "." in x))
    v[11] = log(sum(1 for x in numbers if len(x) >= 4))
    v[12] = log(count_in("%") + lower_count("percent") + zh_percent)
    v[13] = log(count_in("/") + lower_count("half") + zh_fraction)
    v[14] = log(count_in("$") + (0 if ascii_text else _count(text, "¥€£")))
    v[15] = log(sentences)
    v[16] = log(n_words / sentences) if sentences else 0.0
    v[17] = log(commas)
    v[18] = log(lower_count(" and ") + zh_and)
    v[19] = log(question_marks)
    math_symbols = _count(text, "=+*^<>\\")
    if not ascii_text:
        math_symbols += _count(text, "≤≥≠√∑∫π×÷⊃∨∧¬→↔")
    v[20] = log(math_symbols)
    if (
        any(map(text.__contains__, "{};<`"))
        or "def " in text
        or "import " in text
        or "SELECT" in text
    ):
        v[21] = log(len(_CODE.findall(text)))
    v[22] = log(upper_words)
    v[23] = log(names)
    if latin_words:
        v[24] = latin_len / latin_words
        v[25] = long_words / latin_words
    elif cjk_chars:
        # Chinese has no word lengths to compare: read as a typical English prompt's
        v[24] = NEUTRAL_WORD_LEN
        v[25] = NEUTRAL_LONG_WORDS
    v[26] = log(count_in("\n"))
    if "\n" in text:
        k, option_len, numeric, compound, no_question = _options(text)
        if k:
            v[27] = 1.0
            v[28] = log(option_len)
            v[29] = numeric
            v[30] = compound
            v[34] = 1.0 if no_question else 0.0
    if " I" in text:
        v[31] = 1.0 if _ROMAN.search(text) else 0.0
    v[32] = log(count_in("|"))
    if "__" in text or "()" in text or "( )" in text or "（" in text:
        v[33] = 1.0 if _BLANK.search(text) else 0.0
    v[_KW0:] = map(log, kw)
    return Features(tuple(v), tuple(tokens))


def hashed_tokens(tokens: Sequence[str], bits: int) -> list[int]:
    """Bucket indices of tokens: CRC-32 of their UTF-8 bytes, masked to ``bits`` bits."""
    mask = (1 << bits) - 1
    return [crc32(t.encode()) & mask for t in tokens]
