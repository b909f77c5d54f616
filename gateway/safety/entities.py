"""Finding personal data in support messages: phones, e-mails, cards, Chinese IDs, IBANs, bank
accounts and street addresses, as character spans of the original text.

How (docs/safety.md has the measured precision and recall):

- The text is folded first (full-width ASCII to ASCII, the ideographic space to a space: Chinese
  input methods produce both spellings). Folding keeps the length, so every span found in the
  folded text is the same span of the original.
- Text with no digit and no ``@`` has nothing to find: one scan and done (most messages).
- One pass per type, in order of certainty: e-mail, IBAN, Chinese ID, card, labelled bank
  account, phone, address. A span claimed by an earlier type is not looked at again.
- Checksums decide for cards (Luhn plus the issuer range), Chinese IDs (birth date and mod-11
  check character) and IBANs (registry length and mod-97); the look-alikes that fail are left.
- A number the text labels as an order, tracking, invoice, ticket or product number ("order
  13912345678", "订单号：...", "tracking no.", "运单号") is the bot's business and is kept,
  whatever its shape; so are the numbers listed right after it ("orders 1234 and 5678").

Deliberately not detected (see docs/safety.md): names, national phone numbers without separators
other than Chinese mobiles, toll-free/service numbers without a country code, passport numbers,
15-digit first-generation Chinese IDs, lowercase street names, and free-form addresses without
a road and house number.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import NamedTuple

from gateway.safety.checksums import (
    IBAN_LENGTHS,
    card_brand_plausible,
    cn_id_valid,
    iban_valid,
    luhn_valid,
)

PHONE = "phone"
EMAIL = "email"
CARD = "card"
CN_ID = "cn_id"
IBAN = "iban"
BANK_ACCOUNT = "bank_account"
ADDRESS = "address"
ENTITY_TYPES: tuple[str, ...] = (PHONE, EMAIL, CARD, CN_ID, IBAN, BANK_ACCOUNT, ADDRESS)
CHECKSUM_TYPES = frozenset({CARD, CN_ID, IBAN})


class Entity(NamedTuple):
    """One personal value: its type and where it is (``text[start:end]``). (A named tuple: a
    frozen dataclass costs about a microsecond more per value.)"""

    type: str
    start: int
    end: int
    value: str


# --- folding -----------------------------------------------------------------------------------

_NEEDS_FOLD = re.compile("[\uff01-\uff5e\u3000]")


def _half_width(match: re.Match[str]) -> str:
    code = ord(match.group())
    return " " if code == 0x3000 else chr(code - 0xFEE0)


_WORTH_SCANNING = re.compile("[0-9@\uff10-\uff19\uff20]")


def fold(text: str) -> str:
    """Full-width ASCII forms to ASCII, the ideographic space to a space; length kept."""
    # re.sub with a function: about 10x faster than str.translate with a 95-entry table
    return _NEEDS_FOLD.sub(_half_width, text) if _NEEDS_FOLD.search(text) else text


# --- labelled numbers that stay ----------------------------------------------------------------

# A label right before a number, with fillers between: "order 1234", "Order #1234", "order no.:
# 1234", "my order number is 1234", "订单号：1234", "运单号是1234". English labels must be whole
# words; generic nouns ("item", "case", "model") count only with a number word ("case #1234").
# Read backwards from the number in plain Python: a regex searched over the window tries every
# alternative at every position and cost 20-40 µs per number.
_KEEP_EN = frozenset(
    word + plural
    for word in (
        "order", "tracking", "track", "waybill", "invoice", "shipment", "consignment", "parcel",
        "package", "ticket", "sku", "serial", "batch", "lot", "booking", "confirmation",
        "reference", "ref", "rma", "coupon", "voucher", "imei", "awb", "promo", "promotion",
        "discount", "giftcard", "redeem", "redemption", "activation",
    )
    for plural in ("", "s")
)  # fmt: skip
_KEEP_EN_GENERIC = frozenset(
    word + plural
    for word in ("item", "product", "model", "case", "claim", "return", "transaction", "receipt")
    for plural in ("", "s")
)
_KEEP_ZH = tuple(
    "订单 单号 运单 快递单 物流单 发票 工单 货号 商品编号 编号 型号 序列号 批次 "
    "退货单 售后单 交易号 流水号 券码 券号 优惠码 兑换码 激活码 礼品卡".split()
)
_NUMBER_WORDS = (
    *("no.", "no", "nr.", "nr", "number", "num", "id", "code", "#"),
    *("号码", "编号", "号", "码"),
)
_COPULAS = ("is", "was", "是", "为")
_LIST_JOINER = re.compile(r"\s*(?:,|、|/|&|and|or|和|或|及)\s*$", re.IGNORECASE)
_LABEL_WINDOW = 40


def _strip_end(window: str, words: tuple[str, ...]) -> str | None:
    """``window`` without one of ``words`` at its end (English ones as whole words), or None."""
    if not window.endswith(words):
        return None
    for word in words:
        if window.endswith(word):
            rest = window[: len(window) - len(word)]
            if word.isascii() and word[0].isalpha() and rest and rest[-1].isalnum():
                continue
            return rest.rstrip()
    return None


def _ends_with_label(window: str, *, generic: bool) -> bool:
    if window.endswith(_KEEP_ZH):
        return True
    i = len(window)
    while i > 0 and "a" <= window[i - 1] <= "z":
        i -= 1
    word = window[i:]
    if word == "card" and window[:i].rstrip().endswith("gift"):
        return True
    return word in _KEEP_EN or (generic and word in _KEEP_EN_GENERIC)


def _labelled_as_kept(folded: str, start: int, kept_end: int | None) -> bool:
    window = folded[max(0, start - _LABEL_WINDOW) : start].lower().rstrip()
    window = _strip_end(window, _COPULAS) or window
    if window.endswith((":", "-")):
        window = window[:-1].rstrip()
    if _ends_with_label(window, generic=False):
        return True
    bare = _strip_end(window, _NUMBER_WORDS)
    if bare is not None and _ends_with_label(bare, generic=True):
        return True
    # "orders 1234 and 5678": a number listed right after a kept one is kept too
    return kept_end is not None and _LIST_JOINER.fullmatch(folded[kept_end:start]) is not None


# --- the patterns ------------------------------------------------------------------------------

_NOT_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_ALNUM_AFTER = r"(?![0-9A-Za-z])"

# An e-mail address is found from its "@": the local part backwards in Python, the domain with
# this pattern matched at the "@" (a pattern searched over the whole text costs 5-10 µs).
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+'-")
_EMAIL_DOMAIN = re.compile(
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


def _emails(folded: str) -> Iterator[tuple[int, int]]:
    at = folded.find("@")
    while at >= 0:
        domain = _EMAIL_DOMAIN.match(folded, at)
        start = at
        while start > 0 and folded[start - 1] in _EMAIL_LOCAL:
            start -= 1
        while start < at and not folded[start].isalnum():  # starts with a letter or digit
            start += 1
        if domain is not None and start < at:
            yield start, domain.end()
            at = folded.find("@", domain.end())
        else:
            at = folded.find("@", at + 1)


# Found from its check digits (the first digits after two letters), which lets the regex engine
# skip to digits; the match starts two characters before.
_IBAN = re.compile(
    r"\d(?<=[A-Za-z]{2}\d)(?<![0-9A-Za-z][A-Za-z]{2}\d)\d(?: ?[A-Za-z0-9]){11,30}(?![0-9A-Za-z])"
)

# Every pattern below starts with a literal or a character class, its boundary checked by a
# lookbehind after that first character: the regex engine then skips straight to candidate
# characters instead of trying every alternative at every position (5-10x faster).
_CN_ID = re.compile(
    r"[1-8](?<![0-9A-Za-z][1-8])\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}"
    r"[0-9Xx](?![0-9A-Za-z])"
)

# 13-19 digits, plain or in groups split by single spaces or dashes (4-4-4-4[-3], Amex 4-6-5).
_CARD = re.compile(
    r"\d(?<![0-9A-Za-z]\d)(?:\d{12,18}|\d{3}(?:([ -])\d{4}){2,3}(?:[ -]\d{1,4})?"
    r"|\d{3}([ -])\d{6}\2\d{4,5})(?![0-9A-Za-z])"
)

_BANK_NUMBER = r"[^0-9\n.!?。！？;；,，]{0,8}?(?P<number>\d(?:[ -]?\d){7,29})(?![0-9A-Za-z])"
# Both run on lower-cased text and start with a literal (fast); the word boundary before an
# English label and the loyalty-card words before a Chinese one are checked in Python.
_BANK_LABEL_EN = re.compile(
    r"(?:bank\s+account|account|acct|a/c|checking(?:\s+account)?|savings(?:\s+account)?)"
    r"(?:\s*(?:number|no\.?|nr\.?|num|#))?" + _BANK_NUMBER
)
_BANK_LABEL_ZH = re.compile(
    r"(?:银行卡号|银行卡|银行账号|银行帐号|银行账户|银行帐户|对公账户|对公账号|收款账户|收款账号|账号|帐号"
    r"|账户|帐户|卡号)" + _BANK_NUMBER
)
_NOT_BANK_BEFORE = ("会员", "礼品", "积分", "购物", "充值", "优惠", "储值", "会员卡")
# Where "账号"/"account" names a login that is a mobile number, it is a phone.
_CN_MOBILE_DIGITS = re.compile(r"1[3-9]\d{9}")

# Phone patterns, grouped by their first character (see above); earlier ones win a tie.
# Not a phone: digits glued to letters (product codes: "ABC13812345678", "13812345678A"), after a
# currency sign ("¥13800000000") or inside a decimal or grouped number ("13,812,345,678.50").
_NOT_BEFORE = r"(?<![0-9A-Za-z+$¥€£]{c})(?<!\d[.,]{c})"
_PHONES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern + r"(?![0-9A-Za-z]|[.,]\d)")
    for pattern in (
        # + country code: Chinese mobile and landline, North America, anything else (E.164)
        r"\+(?:86[ -]?1[3-9]\d(?:[ -]?\d{4}){2}"
        r"|86[ -]?\(?0?[1-9]\d{1,2}\)?[ -]?\d{3,4}[ -]?\d{4}"
        r"|1[ .-]?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}"
        r"|[2-9]\d{0,2}(?:[ .-]?(?:\(0\)|\(\d{1,4}\)|\d{1,5})){1,6})",
        # 0: 0086 mobile and landline, Chinese landline 021-62345678, UK 07700 900123
        r"0" + _NOT_BEFORE.format(c="0") + r"(?:086[ -]?1[3-9]\d(?:[ -]?\d{4}){2}"
        r"|086[ -]?\(?0?[1-9]\d{1,2}\)?[ -]?\d{3,4}[ -]?\d{4}"
        r"|\d{2,3}-\s?\d{7,8}"
        r"|7\d{3} ?\d{6}|[1-9]\d{1,3} \d{3,4} ?\d{3,4})",
        # (: Chinese landline (021)64871234, North America (415) 555-2671
        r"\((?:0\d{2,3}\)\s?\d{7,8}|[2-9](?!00|11)\d{2}\)\s?[2-9]\d{2}[ .-]\d{4})",
        # Chinese mobile with a bare 86, and without any prefix: 13812345678, 138-1234-5678
        r"8" + _NOT_BEFORE.format(c="8") + r"6[ -]1[3-9]\d(?:[ -]?\d{4}){2}",
        r"1" + _NOT_BEFORE.format(c="1") + r"[3-9]\d(?:[ -]?\d{4}){2}",
        # North America without a country code: separators required, no N00 / N11 codes
        r"[2-9]" + _NOT_BEFORE.format(c="[2-9]") + r"(?!00|11)\d{2}([.-])[2-9]\d{2}\1\d{4}",
    )
)
_TRAILING_GROUP = re.compile(r"[ .-]+\(?\d+\)?$")

# --- addresses ---------------------------------------------------------------------------------

_EN_STREET_TYPES = (
    r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Place|Pl|Terrace"
    r"|Way|Parkway|Pkwy|Loop|Square|Sq|Highway|Hwy|Crescent|Close|Row|Circle|Cir|Trail|Walk"
    r"|Gardens|Grove|Hill|Mews|Plaza|Alley|Broadway"
)
_EN_ADDRESS = re.compile(
    r"\d(?<![0-9A-Za-z]\d)\d{0,4}[A-Za-z]?(?:-\d{1,4})?\s+"
    r"(?:(?:[A-Z][A-Za-z'.-]*|\d{1,3}(?:st|nd|rd|th))\s+){1,4}"
    rf"(?:{_EN_STREET_TYPES})\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?(?![A-Za-z])"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|#)\.?\s*#?[0-9A-Za-z-]{1,6}"
    r"(?![A-Za-z0-9]))?"
    r"(?:,\s+(?:[A-Z][a-z]+\s){0,2}[A-Z][a-z]+,?\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?(?!\d)"
    r"|,\s+(?:[A-Z][a-z]+\s){1,2}[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}(?![A-Za-z0-9]))?"
)

_CJK = "\u4e00-\u9fff"
# The road (or compound) and house number every Chinese address pattern is anchored on.
# Each alternative starts with its literal road or compound word (fast); a road needs a
# Chinese name before it, checked in _zh_addresses.
_ZH_ROADS = ("路", "街", "大道", "大街", "巷", "弄", "胡同", "道")
_ZH_ANCHOR = re.compile(
    "|".join(
        [rf"{road}(?:[一二三四五六七八九十]+段)?\d+(?:-\d+)?号(?:楼|院)?" for road in _ZH_ROADS]
        + [
            rf"{place}\d+(?:号楼|栋|幢|座)"
            for place in ("小区", "花园", "公寓", "大厦", "家园", "新村", "社区", "广场", "中心")
        ]
    )
)

# What may follow the house number, one unit at a time: "3号楼", "1201室", "2单元", "B座".
_ZH_UNIT = re.compile(
    r"[A-Za-z0-9\u4e00-\u9fff]{0,10}?(?:\d+|[A-Za-z])(?:号楼|栋|幢|座|单元|层|楼|室|房|号)"
)
_ZH_UNIT_STOP = re.compile("[的了吗呢吧在到是我你他她请和跟月日天点]")
# Province-level names and the larger cities: where an address most often starts.
_ZH_PLACES = re.compile(
    "北京|上海|天津|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南"
    "|广东|海南|四川|贵州|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|香港|澳门|深圳|广州|杭州"
    "|南京|苏州|成都|武汉|西安|长沙|厦门|青岛|大连|沈阳|哈尔滨|长春|郑州|济南|合肥|福州|南昌|昆明"
    "|贵阳|南宁|海口|三亚|石家庄|太原|呼和浩特|兰州|西宁|银川|乌鲁木齐|拉萨|宁波|温州|无锡|常州"
    "|东莞|佛山|珠海|中山|惠州|汕头|泉州|烟台|潍坊|徐州|南通|扬州|绍兴|嘉兴|金华|台州|洛阳|唐山"
    "|保定|廊坊|桂林|柳州|绵阳|遵义|大理|丽江|昆山|义乌|常熟|江阴|张家港"
)
# Words a customer puts before an address ("收货地址改成", "寄到", "我住在"): never its start.
_ZH_LEAD = re.compile(
    "^(?:或者|还是|以及|收货地址|收件地址|送货地址|配送地址|新地址|地址|改成|改为|换成|寄到|送到|发到|寄往|发往|放在|放到"
    "|搬到|住在|我住|我在|我家|应该是|就是|现在|已经|麻烦|帮我|请|在|到|是|为|我|住)+"
)
_ZH_LEFT_STOP = set("，。！？；：、,.!?;: \n的了吗呢吧啊是在到把给从往我你他她请址住寄送收为搬")
_ZH_LEFT_STOP |= set("和与及或者")
_ZH_LEFT_MAX = 24


_ZH_MAX_UNITS = 5  # building, unit, floor, room, and one spare: "3号楼2单元12层1201室"
_ZH_ROAD_CHARS = re.compile("[路街道巷弄]")


def _zh_addresses(folded: str) -> Iterator[tuple[int, int]]:
    last_end = 0
    for anchor in _ZH_ANCHOR.finditer(folded):
        if anchor.start() < last_end:
            continue  # inside the address just found
        if anchor.group().startswith(_ZH_ROADS) and not (
            anchor.start() > 0 and "\u4e00" <= folded[anchor.start() - 1] <= "\u9fff"
        ):
            continue
        start = _zh_address_start(folded, anchor.start(), last_end)
        if start is None:
            continue
        end = anchor.end()
        for _ in range(_ZH_MAX_UNITS):
            unit = _ZH_UNIT.match(folded, end)
            # "88号我5号到家" is not a unit, nor is a second road ("中山路1号中山路2号": two)
            if unit is None or _ZH_UNIT_STOP.search(unit.group()):
                break
            if _ZH_ROAD_CHARS.search(unit.group()):
                break
            end = unit.end()
        last_end = end
        yield start, end


def _zh_address_start(folded: str, anchor: int, floor: int = 0) -> int | None:
    left = anchor
    while left > floor and anchor - left < _ZH_LEFT_MAX:
        ch = folded[left - 1]
        if not ("\u4e00" <= ch <= "\u9fff" or ch.isalnum()) or ch in "，。！？；：、":
            break
        left -= 1
    span = folded[left:anchor]
    place = _ZH_PLACES.search(span)
    if place is not None:
        return left + place.start()
    # no known place: the road name starts after the last word that cannot be part of it
    start = anchor
    while start > left and folded[start - 1] not in _ZH_LEFT_STOP:
        start -= 1
    lead = _ZH_LEAD.match(folded, start, anchor)
    if lead is not None:
        start = lead.end()
    if anchor - start < 2:  # "道3号" alone, "知道3号": a road needs a name
        return None
    if folded[start:anchor].endswith(("知", "难", "顺", "一", "渠", "频", "街")):
        return None
    return start


# --- the finder --------------------------------------------------------------------------------


_NON_DIGITS = re.compile(r"\D+")


def _digits(value: str) -> str:
    return _NON_DIGITS.sub("", value)


class _Claims:
    """Spans already taken by a type found earlier: sorted, never overlapping, so a new span
    need only be compared with its two neighbours (long messages hold thousands)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def free(self, start: int, end: int) -> bool:
        i = bisect_right(self.starts, start)
        if i > 0 and self.ends[i - 1] > start:
            return False
        return i == len(self.starts) or self.starts[i] >= end

    def take(self, start: int, end: int) -> None:
        i = bisect_right(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)


def find_entities(text: str, types: frozenset[str] | None = None) -> list[Entity]:
    """The personal values in ``text``, in text order, without overlaps."""
    if not text or not _WORTH_SCANNING.search(text):
        return []
    folded = fold(text)
    sink = _Sink(text, folded, frozenset(ENTITY_TYPES) if types is None else types)
    if "@" in folded:
        for start, end in _emails(folded):
            sink.add(EMAIL, start, end, exemptable=False)
    for finder in _FINDERS:
        finder(folded, sink)
    sink.found.sort(key=lambda e: e.start)
    return sink.found


class _Sink:
    """What one scan has found and claimed so far."""

    __slots__ = ("text", "folded", "wanted", "claims", "found", "kept_end")

    def __init__(self, text: str, folded: str, wanted: frozenset[str]) -> None:
        self.text = text
        self.folded = folded
        self.wanted = wanted
        self.claims = _Claims()
        self.found: list[Entity] = []
        self.kept_end: int | None = None  # end of the last labelled number kept, for lists

    def taken(self, start: int) -> bool:
        """Is ``start`` inside a span found before? (Checked before any costly validation.)"""
        return not self.claims.free(start, start + 1)

    def add(self, kind: str, start: int, end: int, *, exemptable: bool = True) -> bool:
        if not self.claims.free(start, end):
            return False
        self.claims.take(start, end)  # kept numbers are claimed too: no other type takes them
        if exemptable and _labelled_as_kept(self.folded, start, self.kept_end):
            self.kept_end = end
            return True
        if kind in self.wanted:
            self.found.append(Entity(kind, start, end, self.text[start:end]))
        return True


def _find_ibans(folded: str, sink: _Sink) -> None:
    for m in _IBAN.finditer(folded):
        # the greedy match may run on into the next words: take the country's IBAN length
        begin = m.start() - 2
        length = IBAN_LENGTHS.get(folded[begin : begin + 2].upper())
        if length is None:
            continue
        end, seen = begin, 0
        while seen < length and end < m.end():
            if folded[end] != " ":
                seen += 1
            end += 1
        if seen < length or (end < len(folded) and folded[end].isalnum()):
            continue  # too short, or the IBAN-length prefix of a longer word
        if iban_valid(folded[begin:end].replace(" ", "")):
            sink.add(IBAN, begin, end)


def _find_cn_ids(folded: str, sink: _Sink) -> None:
    for m in _CN_ID.finditer(folded):
        if cn_id_valid(m.group()):
            sink.add(CN_ID, m.start(), m.end())


def _find_cards(folded: str, sink: _Sink) -> None:
    for m in _CARD.finditer(folded):
        if sink.taken(m.start()):  # the digits of an IBAN, an ID
            continue
        candidate = m.group()
        while True:
            digits = _digits(candidate)
            if 13 <= len(digits) <= 19 and card_brand_plausible(digits) and luhn_valid(digits):
                sink.add(CARD, m.start(), m.start() + len(candidate))
                break
            cut = max(candidate.rfind(" "), candidate.rfind("-"))
            if cut < 0:
                break
            candidate = candidate[:cut]


_BANK_WORDS = ("account", "acct", "a/c", "checking", "savings", "账", "帐", "卡号", "银行卡")


def _find_bank_accounts(folded: str, sink: _Sink) -> None:
    lowered = folded.lower()
    if len(lowered) != len(folded) or not any(word in lowered for word in _BANK_WORDS):
        return  # (lower() changed the length: a rare letter like "İ"; spans would not line up)
    matches = [
        m
        for m in _BANK_LABEL_EN.finditer(lowered)
        if not (m.start() > 0 and lowered[m.start() - 1].isalpha())
    ]
    matches += [
        m
        for m in _BANK_LABEL_ZH.finditer(lowered)
        if not lowered[max(0, m.start() - 3) : m.start()].endswith(_NOT_BANK_BEFORE)
    ]
    for m in sorted(matches, key=lambda m: m.start()):
        digits = _digits(m.group("number"))
        if _CN_MOBILE_DIGITS.fullmatch(digits):
            continue  # a login by mobile number: the phone pass takes it
        sink.add(BANK_ACCOUNT, m.start("number"), m.end("number"))


def _find_phones(folded: str, sink: _Sink) -> None:
    found = sorted(
        ((m.start(), i, m) for i, pattern in enumerate(_PHONES) for m in pattern.finditer(folded)),
        key=lambda item: (item[0], item[1]),
    )
    for _, _, m in found:
        if sink.taken(m.start()):
            continue
        start, end = m.start(), m.end()
        value = m.group()
        if value.startswith("+"):
            # E.164 allows 15 digits at most: a longer run swallowed a following number
            while len(_digits(value)) > 15 and _TRAILING_GROUP.search(value):
                value = _TRAILING_GROUP.sub("", value)
            if len(_digits(value)) < 8:
                continue
            end = start + len(value)
        sink.add(PHONE, start, end)


def _find_addresses(folded: str, sink: _Sink) -> None:
    for m in _EN_ADDRESS.finditer(folded):
        sink.add(ADDRESS, m.start(), m.end(), exemptable=False)
    for start, end in _zh_addresses(folded):
        sink.add(ADDRESS, start, end, exemptable=False)


_FINDERS: tuple[Callable[[str, _Sink], None], ...] = (
    _find_ibans,
    _find_cn_ids,
    _find_cards,
    _find_bank_accounts,
    _find_phones,
    _find_addresses,
)
