"""The approved-answers file: per tenant, one JSONL file under ``config/answers/``.

One JSON object per line, of two kinds::

    {"placeholders": ["order_id", "tracking_url"]}
    {"intent": "track_order", "answer": "Follow order {order_id} at {tracking_url}.",
     "examples": ["where is my parcel", "我的快递到哪了", "track my order"]}

* ``placeholders`` (at most one such line): the names the bot fills in an answer; ``{name}`` in an
  answer must be one of them, so a typo (``{order_idd}``) is caught at load, not by a customer.
  Other braces are text.
* one line per intent: a unique ``intent`` name, the approved ``answer`` (what the customer is
  sent, word for word, placeholders apart) and the ``examples`` the matcher learns the intent from
  (at least one; 10 or more, in every language customers write in, make a good matcher).

Why JSONL rather than YAML: every problem is named by its exact line, and a promoted answer
(``promote.py``) is one line appended or rewritten, leaving the rest of the file as it was.

:func:`load_answers` rejects, with ``file:line``: invalid JSON, unknown fields, a duplicate intent,
an empty or missing example list, an example given under two intents, an empty answer, an
unknown placeholder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.answers.features import normalise

__all__ = [
    "AnswersFile",
    "AnswersFileError",
    "ApprovedAnswer",
    "load_answers",
    "parse_line",
    "placeholders_in",
]

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
INTENT_NAME = re.compile(r"^[\w.:-]{1,100}$")
_INTENT_FIELDS = frozenset({"intent", "answer", "examples"})


class AnswersFileError(ValueError):
    """An answers file that cannot be served; the message starts with ``file:line:``."""


@dataclass(frozen=True, slots=True)
class ApprovedAnswer:
    intent: str
    answer: str
    examples: tuple[str, ...]
    line: int

    @property
    def placeholders(self) -> tuple[str, ...]:
        return placeholders_in(self.answer)


@dataclass(frozen=True, slots=True)
class AnswersFile:
    path: Path
    intents: dict[str, ApprovedAnswer]
    placeholders: frozenset[str] = field(default_factory=frozenset)
    placeholders_line: int | None = None

    def examples(self) -> Iterator[tuple[str, str]]:
        """``(text, intent)`` of every example, in file order."""
        for answer in self.intents.values():
            for text in answer.examples:
                yield text, answer.intent


def placeholders_in(answer: str) -> tuple[str, ...]:
    """The placeholder names of an answer, in order of first use."""
    return tuple(dict.fromkeys(PLACEHOLDER.findall(answer)))


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def parse_line(row: Any) -> ApprovedAnswer | frozenset[str]:
    """Check one decoded line; raises ``ValueError`` with what is wrong (no location)."""
    if not isinstance(row, dict):
        raise ValueError(f"a line must be a JSON object, got {_kind(row)}")
    if "placeholders" in row:
        extra = sorted(set(row) - {"placeholders"})
        if extra:
            raise ValueError(
                f'a "placeholders" line holds nothing else; move {", ".join(extra)} to its own '
                "line"
            )
        names = row["placeholders"]
        if not isinstance(names, list) or not all(
            isinstance(n, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names
        ):
            raise ValueError('"placeholders" must be a list of names like "order_id"')
        return frozenset(names)
    unknown = sorted(set(row) - _INTENT_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)}; an intent line has intent, answer, examples"
        )
    intent = row.get("intent")
    if not isinstance(intent, str) or not INTENT_NAME.match(intent):
        raise ValueError(
            '"intent" must be a name of letters, digits, _ . : - (up to 100), e.g. "track_order"'
        )
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f'intent {intent!r}: "answer" must be a non-empty string')
    examples = row.get("examples")
    if not isinstance(examples, list) or not examples:
        raise ValueError(
            f'intent {intent!r}: "examples" must be a non-empty list of the ways customers ask '
            "for it"
        )
    for i, text in enumerate(examples):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f'intent {intent!r}: example {i + 1} must be a non-empty string')
    return ApprovedAnswer(intent=intent, answer=answer, examples=tuple(examples), line=0)


def load_answers(path: Path) -> AnswersFile:
    """Read and check an answers file; :class:`AnswersFileError` names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AnswersFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise AnswersFileError(f"{path}: not UTF-8 text; save the file as UTF-8") from exc
    intents: dict[str, ApprovedAnswer] = {}
    placeholders: frozenset[str] | None = None
    placeholders_line: int | None = None
    example_owner: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed = parse_line(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AnswersFileError(
                f"{path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno}); each line "
                "must be one JSON object"
            ) from exc
        except ValueError as exc:
            raise AnswersFileError(f"{path}:{lineno}: {exc}") from exc
        if isinstance(parsed, frozenset):
            if placeholders is not None:
                raise AnswersFileError(
                    f"{path}:{lineno}: a second \"placeholders\" line (the first is line "
                    f"{placeholders_line}); list every name on one line"
                )
            placeholders, placeholders_line = parsed, lineno
            continue
        first = intents.get(parsed.intent)
        if first is not None:
            raise AnswersFileError(
                f"{path}:{lineno}: duplicate intent {parsed.intent!r} (first on line "
                f"{first.line}); merge the two lines"
            )
        for example in parsed.examples:
            key = normalise(" ".join(example.split()))
            owner = example_owner.get(key)
            if owner is not None and owner[0] != parsed.intent:
                raise AnswersFileError(
                    f"{path}:{lineno}: example {example!r} is also an example of intent "
                    f"{owner[0]!r} (line {owner[1]}); an utterance can teach one intent only"
                )
            example_owner[key] = (parsed.intent, lineno)
        intents[parsed.intent] = ApprovedAnswer(
            intent=parsed.intent, answer=parsed.answer, examples=parsed.examples, line=lineno
        )
    declared = placeholders or frozenset()
    for answer in intents.values():
        unknown = [n for n in answer.placeholders if n not in declared]
        if unknown:
            known = ", ".join(sorted(declared)) or "none declared"
            raise AnswersFileError(
                f"{path}:{answer.line}: intent {answer.intent!r}: unknown placeholder "
                f"{{{unknown[0]}}} (declared: {known}); add it to the \"placeholders\" line or "
                "fix the name"
            )
    if not intents:
        raise AnswersFileError(f"{path}: no intents; add one line per intent (docs/caching.md)")
    return AnswersFile(
        path=path, intents=intents, placeholders=declared, placeholders_line=placeholders_line
    )
