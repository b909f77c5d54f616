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
from dataclasses import dataclass

from gateway.safety.checksums import card_brand_plausible, cn_id_valid, iban_valid, luhn_valid

PHONE = "phone"
EMAIL = "email"
CARD = "card"
CN_ID = "cn_id"
IBAN = "iban"
BANK_ACCOUNT = "bank_account"
ADDRESS = "address"
ENTITY_TYPES: tuple[str, ...] = (PHONE, EMAIL, CARD, CN_ID, IBAN, BANK_ACCOUNT, ADDRESS)
CHECKSUM_TYPES = frozenset({CARD, CN_ID, IBAN})


@dataclass(frozen=True, slots=True)
class Entity:
    """One personal value: its type and where it is (``text[start:end]``)."""

    type: str
    start: int
    end: int
    value: str


# --- folding -----------------------------------------------------------------------------------

_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FOLD[0x3000] = 0x20
_FOLD_TABLE = str.maketrans(_FOLD)
_NEEDS_FOLD = re.compile("[\uff01-\uff5e\u3000]")
_WORTH_SCANNING = re.compile("[0-9@\uff10-\uff19\uff20]")


def fold(text: str) -> str:
    """Full-width ASCII forms to ASCII, the ideographic space to a space; length kept."""
    return text.translate(_FOLD_TABLE) if _NEEDS_FOLD.search(text) else text


# --- labelled numbers that stay ----------------------------------------------------------------

# A label right before a number (fillers allowed: "no.", "number", "#", ":", "is", "是"). English
# labels must start a word; Chinese ones may follow anything.
_KEEP_LABEL = re.compile(
    r"(?:(?<![a-z])(?:(?:order|tracking|track|waybill|invoice|shipment|consignment|parcel|package"
    r"|ticket|sku|serial|batch|lot|booking|confirmation|reference|ref|rma|coupon|voucher|imei|awb"
    r"|promo|promotion|discount|gift\s*card|redeem|redemption|activation)s?"
    r"(?:\s+(?:code|id))?"
    # generic nouns label a number only with a number word: "item no.", "case #", "model number"
    r"|(?:item|product|model|case|claim|return|transaction|receipt|part)s?\s*"
    r"(?=no\.?|nr\.?|number|num|id\b|code|#))"
    r"|订单|单号|运单|快递单|物流单|发票|工单|货号|商品编号|编号|型号|序列号|批次"
    r"|退货单|售后单|交易号|流水号|券码|券号|优惠码|兑换码|激活码|礼品卡)"
    r"\s*(?:no\.?|nr\.?|number|num|id|code|#|号码|编号|号|码)?\s*[:#-]?\s*(?:is|was|是|为)?\s*$",
    re.IGNORECASE,
)
_LIST_JOINER = re.compile(r"\s*(?:,|、|/|&|and|or|和|或|及)\s*$", re.IGNORECASE)
_LABEL_WINDOW = 40


def _labelled_as_kept(folded: str, start: int, kept_end: int | None) -> bool:
    window = folded[max(0, start - _LABEL_WINDOW) : start]
    if _KEEP_LABEL.search(window):
        return True
    # "orders 1234 and 5678": a number listed right after a kept one is kept too
    return kept_end is not None and _LIST_JOINER.fullmatch(folded[kept_end:start]) is not None


# --- the patterns ------------------------------------------------------------------------------

_NOT_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_ALNUM_AFTER = r"(?![0-9A-Za-z])"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)

_IBAN = re.compile(
    _NOT_ALNUM_BEFORE + r"[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}" + _NOT_ALNUM_AFTER
)

_CN_ID = re.compile(
    r"(?<![0-9A-Za-z])[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}"
    r"[0-9Xx](?![0-9A-Za-z])"
)

# 13-19 digits, plain or in groups split by single spaces or dashes (4-4-4-4[-3], Amex 4-6-5).
_CARD = re.compile(
    r"(?<![0-9A-Za-z])(?:\d{13,19}|\d{4}(?:([ -])\d{4}){2,3}(?:[ -]\d{1,4})?"
    r"|\d{4}([ -])\d{6}\2\d{4,5})(?![0-9A-Za-z])"
)

_BANK_LABEL = re.compile(
    r"(?:(?<![a-z])(?:bank\s+account|account|acct|a/c|checking(?:\s+account)?"
    r"|savings(?:\s+account)?)(?:\s*(?:number|no\.?|nr\.?|num|#))?"
    r"|(?<!会员)(?<!礼品)(?<!积分)(?<!购物)(?<!充值)(?<!优惠)(?<!储值)(?<!会员卡)"
    r"(?:银行卡号|银行卡|银行账号|银行帐号|银行账户|银行帐户|对公账户|对公账号|收款账户|收款账号|账号|帐号"
    r"|账户|帐户|卡号))"
    r"[^0-9\n.!?。！？;；,，]{0,8}?(?P<number>\d(?:[ -]?\d){7,29})(?![0-9A-Za-z])",
    re.IGNORECASE,
)
# Where "账号"/"account" names a login that is a mobile number, it is a phone.
_CN_MOBILE_DIGITS = re.compile(r"1[3-9]\d{9}")

_PHONE = re.compile(
    "(?:"
    + "|".join(
        (
            # Chinese mobile, optional +86 / 0086 / 86, optional 3-4-4 separators
            r"(?:(?:\+|00)86[ -]?|(?<![0-9+])86[ -]|(?<![0-9+]))1[3-9]\d(?:[ -]?\d{4}){2}",
            # Chinese landline with +86: +86 10 6552 9988, +86-755-86013388
            r"(?:\+|00)86[ -]?\(?0?[1-9]\d{1,2}\)?[ -]?\d{3,4}[ -]?\d{4}",
            # Chinese landline: 021-62345678, 0755-86013388, (021)64871234
            r"(?:\(0\d{2,3}\)|(?<![0-9+])0\d{2,3}-)\s?\d{7,8}",
            # North America with +1: +1 (415) 555-2671, +1-646-555-0123, +1 800 555 0100
            r"\+1[ .-]?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}",
            # North America without a country code: separators required, no N00 / N11 codes
            r"(?<![0-9+])(?:\([2-9](?!00|11)\d{2}\)\s?|[2-9](?!00|11)\d{2}([.-]))[2-9]\d{2}"
            r"(?(1)\1|[ .-])\d{4}",
            # Other international numbers: + country code and groups (E.164: 8-15 digits)
            r"\+[2-9]\d{0,2}(?:[ .-]?(?:\(0\)|\(\d{1,4}\)|\d{1,5})){1,6}",
            # UK national: 07700 900123, 020 7946 0958, 0161 496 0012
            r"(?<![0-9+])0(?:7\d{3} ?\d{6}|[1-9]\d{1,3} \d{3,4} ?\d{3,4})",
        )
    )
    + ")(?![0-9])"
)
_TRAILING_GROUP = re.compile(r"[ .-]+\(?\d+\)?$")

# --- addresses ---------------------------------------------------------------------------------

_EN_STREET_TYPES = (
    r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Place|Pl|Terrace"
    r"|Way|Parkway|Pkwy|Loop|Square|Sq|Highway|Hwy|Crescent|Close|Row|Circle|Cir|Trail|Walk"
    r"|Gardens|Grove|Hill|Mews|Plaza|Alley|Broadway"
)
_EN_ADDRESS = re.compile(
    r"(?<![0-9A-Za-z])\d{1,5}[A-Za-z]?(?:-\d{1,4})?\s+"
    r"(?:(?:[A-Z][A-Za-z'.-]*|\d{1,3}(?:st|nd|rd|th))\s+){1,4}"
    rf"(?:{_EN_STREET_TYPES})\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?(?![A-Za-z])"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|#)\.?\s*#?[0-9A-Za-z-]{1,6}"
    r"(?![A-Za-z0-9]))?"
    r"(?:,\s+(?:[A-Z][a-z]+\s){0,2}[A-Z][a-z]+,?\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?(?!\d)"
    r"|,\s+(?:[A-Z][a-z]+\s){1,2}[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}(?![A-Za-z0-9]))?"
)

_CJK = "\u4e00-\u9fff"
# The road (or compound) and house number every Chinese address pattern is anchored on.
_ZH_ANCHOR = re.compile(
    rf"(?:(?<=[{_CJK}])(?:路|街|大道|大街|巷|弄|胡同|道)(?:[一二三四五六七八九十]+段)?"
    r"\d+(?:-\d+)?号(?:楼|院)?"
    r"|(?:小区|花园|公寓|大厦|家园|新村|社区|广场|中心)\d+(?:号楼|栋|幢|座))"
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
    "^(?:收货地址|收件地址|送货地址|配送地址|新地址|地址|改成|改为|换成|寄到|送到|发到|寄往|发往|放在|放到"
    "|搬到|住在|我住|我在|我家|应该是|就是|现在|已经|麻烦|帮我|请|在|到|是|为|我|住)+"
)
_ZH_LEFT_STOP = set("，。！？；：、,.!?;: \n的了吗呢吧啊是在到把给从往我你他她请址住寄送收为搬")
_ZH_LEFT_MAX = 24


def _zh_addresses(folded: str) -> Iterator[tuple[int, int]]:
    for anchor in _ZH_ANCHOR.finditer(folded):
        start = _zh_address_start(folded, anchor.start())
        if start is None:
            continue
        end = anchor.end()
        while (unit := _ZH_UNIT.match(folded, end)) is not None:
            if _ZH_UNIT_STOP.search(unit.group()):  # "88号我5号到家": not a unit
                break
            end = unit.end()
        yield start, end


def _zh_address_start(folded: str, anchor: int) -> int | None:
    left = anchor
    while left > 0 and anchor - left < _ZH_LEFT_MAX:
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


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


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
    wanted = frozenset(ENTITY_TYPES) if types is None else types
    claims = _Claims()
    found: list[Entity] = []
    kept_end: list[int | None] = [None]  # end of the last labelled number kept, for lists

    def add(kind: str, start: int, end: int, *, exemptable: bool = True) -> bool:
        if not claims.free(start, end):
            return False
        claims.take(start, end)  # kept numbers are claimed too: no other type may take them
        if exemptable and _labelled_as_kept(folded, start, kept_end[0]):
            kept_end[0] = end
            return True
        if kind in wanted:
            found.append(Entity(kind, start, end, text[start:end]))
        return True

    if "@" in folded:
        for m in _EMAIL.finditer(folded):
            add(EMAIL, m.start(), m.end(), exemptable=False)
    for finder in _FINDERS:
        finder(folded, add)
    found.sort(key=lambda e: e.start)
    return found


_Add = Callable[..., bool]


def _find_ibans(folded: str, add: _Add) -> None:
    for m in _IBAN.finditer(folded):
        # the greedy match may run into a following word or number group: shorten group by group
        candidate = m.group()
        while len(candidate.replace(" ", "")) >= 15:
            if iban_valid(candidate.replace(" ", "")):
                add(IBAN, m.start(), m.start() + len(candidate))
                break
            cut = candidate.rfind(" ")
            if cut < 0:
                break
            candidate = candidate[:cut]


def _find_cn_ids(folded: str, add: _Add) -> None:
    for m in _CN_ID.finditer(folded):
        if cn_id_valid(m.group()):
            add(CN_ID, m.start(), m.end())


def _find_cards(folded: str, add: _Add) -> None:
    for m in _CARD.finditer(folded):
        candidate = m.group()
        while True:
            digits = _digits(candidate)
            if 13 <= len(digits) <= 19 and card_brand_plausible(digits) and luhn_valid(digits):
                add(CARD, m.start(), m.start() + len(candidate))
                break
            cut = max(candidate.rfind(" "), candidate.rfind("-"))
            if cut < 0:
                break
            candidate = candidate[:cut]


def _find_bank_accounts(folded: str, add: _Add) -> None:
    for m in _BANK_LABEL.finditer(folded):
        digits = _digits(m.group("number"))
        if _CN_MOBILE_DIGITS.fullmatch(digits):
            continue  # a login by mobile number: the phone pass takes it
        add(BANK_ACCOUNT, m.start("number"), m.end("number"))


def _find_phones(folded: str, add: _Add) -> None:
    for m in _PHONE.finditer(folded):
        start, end = m.start(), m.end()
        value = m.group()
        if value.startswith("+"):
            # E.164 allows 15 digits at most: a longer run swallowed a following number
            while len(_digits(value)) > 15 and _TRAILING_GROUP.search(value):
                value = _TRAILING_GROUP.sub("", value)
            if len(_digits(value)) < 8:
                continue
            end = start + len(value)
        add(PHONE, start, end)


def _find_addresses(folded: str, add: _Add) -> None:
    for m in _EN_ADDRESS.finditer(folded):
        add(ADDRESS, m.start(), m.end(), exemptable=False)
    for start, end in _zh_addresses(folded):
        add(ADDRESS, start, end, exemptable=False)


_FINDERS: tuple[Callable[[str, _Add], None], ...] = (
    _find_ibans,
    _find_cn_ids,
    _find_cards,
    _find_bank_accounts,
    _find_phones,
    _find_addresses,
)
