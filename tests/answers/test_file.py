"""The answers file: what loads, and every rejection names the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.answers.file import AnswersFileError, load_answers, placeholders_in


def write(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "answers.jsonl"
    path.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    return path


def intent(name: str, answer: str = "An answer.", examples: list[str] | None = None) -> dict:
    return {"intent": name, "answer": answer, "examples": examples or [f"{name} please"]}


def test_the_shipped_example_file_loads(example_file: Path) -> None:
    answers = load_answers(example_file)
    assert "track_order" in answers.intents
    assert answers.intents["track_order"].placeholders == ("order_id", "tracking_url")
    assert any("快递" in text for text, _ in answers.examples())


def test_placeholders_are_names_in_braces_and_other_braces_are_text() -> None:
    assert placeholders_in("Order {order_id} ships in {days}; {order_id} {not a name}") == (
        "order_id",
        "days",
    )


def test_duplicate_intent_is_rejected_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, intent("refund"), intent("track"), intent("refund"))
    with pytest.raises(AnswersFileError, match=rf"{path}:3: duplicate intent 'refund' .*line 1"):
        load_answers(path)


def test_empty_examples_are_rejected_with_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, intent("track"), {"intent": "refund", "answer": "x", "examples": []})
    with pytest.raises(AnswersFileError, match=rf"{path}:2: intent 'refund': \"examples\""):
        load_answers(path)


def test_blank_example_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, intent("track", examples=["where is it", "  "]))
    with pytest.raises(AnswersFileError, match=rf"{path}:1: .*example 2"):
        load_answers(path)


def test_unknown_placeholder_is_rejected_with_the_answers_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"placeholders": ["order_id"]},
        intent("track"),
        intent("status", answer="Order {order_idd} is on its way"),
    )
    with pytest.raises(AnswersFileError, match=rf"{path}:3: .*unknown placeholder \{{order_idd\}}"):
        load_answers(path)


def test_a_placeholder_needs_a_declaration(tmp_path: Path) -> None:
    path = write(tmp_path, intent("status", answer="Order {order_id}"))
    with pytest.raises(AnswersFileError, match="none declared"):
        load_answers(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got a list"),
        ('{"intent": "x", "answer": "y", "examples": ["z"], "answr": 1}', "unknown field"),
        ('{"intent": "has space", "answer": "y", "examples": ["z"]}', '"intent" must be a name'),
        ('{"intent": "x", "answer": "", "examples": ["z"]}', '"answer" must be a non-empty'),
        ('{"placeholders": ["ok"], "intent": "x"}', "holds nothing else"),
        ('{"placeholders": "order_id"}', "must be a list of names"),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, intent("first"), line)
    with pytest.raises(AnswersFileError, match=rf"{path}:2: .*{message}"):
        load_answers(path)


def test_one_example_cannot_teach_two_intents(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        intent("track", examples=["Where is my order?"]),
        intent("status", examples=["where is my   order?"]),
    )
    with pytest.raises(AnswersFileError, match=rf"{path}:2: .*also an example of intent 'track'"):
        load_answers(path)


def test_a_second_placeholders_line_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, {"placeholders": ["a"]}, intent("x"), {"placeholders": ["b"]})
    with pytest.raises(AnswersFileError, match=rf"{path}:3: a second \"placeholders\" line"):
        load_answers(path)


def test_a_file_without_intents_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, {"placeholders": []}, "")
    with pytest.raises(AnswersFileError, match="no intents"):
        load_answers(path)


def test_a_file_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"intent": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(AnswersFileError, match="not UTF-8"):
        load_answers(path)
