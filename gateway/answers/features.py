"""The matcher's text features: character n-grams and words, English and Chinese alike.

``grams(text)`` is the one analyzer both training (scikit-learn's ``TfidfVectorizer`` with it as
``analyzer``) and serving (a vocabulary lookup) use, so the two cannot drift apart:

* character 2-5-grams inside each word padded with spaces (``" refund "`` gives ``" r"``,
  ``"re"``, ...): robust to typos and inflection ("refunding", "reimbvurse"), and on Chinese, which
  has no spaces, a run of characters is one "word", so they are character n-grams of the phrase;
* words and word bigrams, numbers folded to ``0`` so order numbers do not become features.

Text is NFKC-normalised (full-width forms) and lowercased first.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FEATURE_SET", "grams", "normalise"]

# Bump when grams() changes: a model names the feature set it was trained with.
FEATURE_SET = "answers-grams-1"

_WORD = re.compile(r"[\u2e80-\U0002ffff]+|[^\W\d_]+(?:'[^\W\d_]+)?|\d+(?:[.,]\d+)*")
_CJK = re.compile(r"[\u2e80-\U0002ffff]")
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")


def normalise(text: str) -> str:
    """NFKC, lowercase, numbers as ``0``."""
    return _DIGITS.sub("0", unicodedata.normalize("NFKC", text).lower())


def grams(text: str) -> list[str]:
    """The features of one text (with repeats: the vectoriser counts them)."""
    words = _WORD.findall(normalise(text))
    out: list[str] = []
    for word in words:
        padded = f" {word} "
        for n in range(2, 6):
            out.extend("c" + padded[i : i + n] for i in range(len(padded) - n + 1))
    tokens: list[str] = []
    for word in words:
        if _CJK.match(word):
            tokens.extend(word)  # characters: Chinese words are one or two of them
        else:
            tokens.append(word)
    out.extend("w" + t for t in tokens)
    out.extend(f"b{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False))
    return out
