"""The check digits that tell a real card, Chinese ID or IBAN from a number of the same shape.

Each function takes the number without separators and answers whether it is valid; none raises.
"""

from __future__ import annotations

from datetime import date

# ISO 13616 registry: country code -> IBAN length. A wrong length is not an IBAN even when the
# mod-97 check passes by chance (1 in 97 for a random string).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of payment card numbers."""
    odd = sum(map(int, digits[-1::-2]))
    even = sum(_DOUBLED[int(d)] for d in digits[-2::-2])
    return (odd + even) % 10 == 0


def card_brand_plausible(digits: str) -> bool:
    """Does the number start like an issued card of its length (issuer ranges, ISO/IEC 7812)?

    Luhn alone passes one random number in ten; order and tracking numbers of card length are
    common in support text, so the issuer range has to fit as well.
    """
    n = len(digits)
    head2 = int(digits[:2])
    head4 = int(digits[:4])
    if digits[0] == "4":  # Visa (and Chinese banks' Visa debit cards)
        return n in (13, 16, 19)
    if 51 <= head2 <= 55 or 2221 <= head4 <= 2720:  # Mastercard
        return n == 16
    if head2 in (34, 37):  # American Express
        return n == 15
    if head2 == 62 or head2 == 81:  # UnionPay
        return 16 <= n <= 19
    if head4 == 6011 or head2 == 65 or 644 <= int(digits[:3]) <= 649:  # Discover
        return 16 <= n <= 19
    if 3528 <= head4 <= 3589:  # JCB
        return 16 <= n <= 19
    if head2 in (30, 36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if head2 in (50, 56, 57, 58, 60, 63, 67, 68, 69):  # Maestro, RuPay and other debit schemes
        return 16 <= n <= 19
    return False


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_valid(value: str) -> bool:
    """GB 11643-1999: 18 characters, a real birth date and the mod-11 check character."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if not 1900 <= born.year <= 2100:
        return False
    check = _ID_CHECK[sum((ord(c) - 48) * w for c, w in zip(value, _ID_WEIGHTS, strict=False)) % 11]
    return value[17].upper() == check


def iban_valid(value: str) -> bool:
    """ISO 13616: the registry length of its country and the mod-97 check (remainder 1)."""
    value = value.upper()
    if IBAN_LENGTHS.get(value[:2]) != len(value) or not value[2:4].isdigit():
        return False
    if not value.isalnum() or not value.isascii():
        return False
    rearranged = value[4:] + value[:4]
    remainder = 0
    for ch in rearranged:
        remainder = (remainder * (100 if ch.isalpha() else 10) + int(ch, 36)) % 97
    return remainder == 1
