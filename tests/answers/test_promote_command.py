"""gateway answers promote: an approved wording or a new intent goes into the answers file,
checked; a bad promotion names the problem and leaves the file as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.answers.file import load_answers
from gateway.cli import main


def test_promote_adds_an_example_then_a_new_intent(
    tmp_path: Path, example_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "shop.jsonl"
    shutil.copy(example_file, path)

    first = main(
        [
            "answers",
            "promote",
            "--file",
            str(path),
            "--intent",
            "track_order",
            "--example",
            "where has my stuff got to",
        ]
    )
    again = main(
        [
            "answers",
            "promote",
            "--file",
            str(path),
            "--intent",
            "track_order",
            "--example",
            "Where has my stuff got to",
        ]
    )
    new = main(
        [
            "answers",
            "promote",
            "--file",
            str(path),
            "--intent",
            "gift_wrap",
            "--example",
            "can you gift wrap it",
            "--answer",
            "Gift wrapping costs $3 per item.",
        ]
    )
    out = capsys.readouterr().out

    assert (first, again, new) == (0, 0, 0)
    answers = load_answers(path)
    assert "where has my stuff got to" in answers.intents["track_order"].examples
    assert answers.intents["gift_wrap"].answer == "Gift wrapping costs $3 per item."
    assert "example added to 'track_order'" in out
    assert "example already in 'track_order'" in out
    assert "gateway answers train --data" in out


def test_promote_to_an_unknown_intent_names_the_known_ones_and_changes_nothing(
    tmp_path: Path, example_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "shop.jsonl"
    shutil.copy(example_file, path)
    before = path.read_bytes()

    status = main(
        ["answers", "promote", "--file", str(path), "--intent", "trak_order", "--example", "x"]
    )

    assert status == 2
    err = capsys.readouterr().err
    assert "gateway answers promote:" in err and "no intent 'trak_order'" in err
    assert "track_order" in err
    assert path.read_bytes() == before
