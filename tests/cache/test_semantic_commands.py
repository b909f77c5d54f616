"""gateway cache replay | match: the output shapes the issue fixes, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


def write_rows(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def output(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_replay_prints_hit_and_the_row_served_for_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(
        tmp_path / "stream.jsonl",
        [
            {"text": "where is my order?"},
            {"text": "do you ship to canada"},
            {"text": "Where is my order"},
            {"text": "I don't want a refund"},
            {"text": "I want a refund"},
            {"text": "cancel order 12345678"},
            {"text": "cancel order 12345678"},
        ],
    )
    assert main(["cache", "replay", "--data", str(data)]) == 0
    assert output(capsys) == [
        {"hit": False, "matched": None},
        {"hit": False, "matched": None},
        {"hit": True, "matched": 0},
        {"hit": False, "matched": None},
        {"hit": False, "matched": None},  # negation
        {"hit": False, "matched": None},  # personalised: not cached by default
        {"hit": False, "matched": None},
    ]


def test_replay_personalised_matches_the_same_order_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(
        tmp_path / "s.jsonl",
        [
            {"text": "cancel order 12345678"},
            {"text": "cancel order 87654321"},
            {"text": "Cancel order 12345678"},
        ],
    )
    assert main(["cache", "replay", "--data", str(data), "--personalised", "--explain"]) == 0
    lines = output(capsys)
    assert [line["matched"] for line in lines] == [None, None, 0]
    assert lines[1]["reason"] == "guard: entities"


def test_match_stores_q1_in_an_empty_cache_and_looks_up_q2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = write_rows(
        tmp_path / "pairs.jsonl",
        [
            {"q1": "Where is my order?", "q2": "where is my order", "same": True},
            {"q1": "如何关闭自动续费？", "q2": "如何开通自动续费？", "same": False},
            {"q1": "do you ship to canada", "q2": "where is my order"},
        ],
    )
    assert main(["cache", "match", "--pairs", str(pairs)]) == 0
    assert output(capsys) == [{"match": True}, {"match": False}, {"match": False}]


@pytest.mark.parametrize(
    ("command", "row", "message"),
    [
        ("replay", {"txt": "hi"}, ':1: "text" must be a string (missing)'),
        ("match", {"q1": "a", "q2": 5}, ':1: "q2" must be a string (a number)'),
        ("replay", [1], ":1: a row must be a JSON object, got a list"),
    ],
)
def test_bad_rows_are_named_by_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, row: object, message: str
) -> None:
    path = write_rows(tmp_path / "bad.jsonl", [row])
    flag = "--data" if command == "replay" else "--pairs"
    assert main(["cache", command, flag, str(path)]) == 2
    assert f"gateway cache {command}: {path}{message}" in capsys.readouterr().err


def test_a_missing_file_and_a_bad_threshold_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "replay", "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    data = write_rows(tmp_path / "ok.jsonl", [{"text": "hi"}])
    assert main(["cache", "replay", "--data", str(data), "--threshold", "1.5"]) == 2
    assert "--threshold must be a cosine in [0, 1]" in capsys.readouterr().err
