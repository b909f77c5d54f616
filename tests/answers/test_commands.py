"""gateway answers train | match | eval | check, run as the CLI runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.answers.model import IntentModel
from gateway.cli import main

TRAIN_ROWS = [
    *(
        {"text": t, "intent": "refund"}
        for t in (
            "I want my money back",
            "refund please",
            "how do I get a refund",
            "我要退款",
            "申请退款",
            "give me a refund for this",
            "refund my order",
            "退钱",
        )
    ),
    *(
        {"text": t, "intent": "track"}
        for t in (
            "where is my parcel",
            "track my order",
            "has it shipped",
            "我的快递到哪了",
            "查物流",
            "where is my package",
            "delivery status",
            "订单发货了吗",
        )
    ),
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_train_then_match_adds_intent_or_null(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    data = write_rows(tmp_path / "train.jsonl", TRAIN_ROWS)
    out = tmp_path / "models" / "m.npz"
    assert main(["answers", "train", "--data", str(data), "--out", str(out)]) == 0
    assert "abstains below confidence" in capsys.readouterr().out
    assert IntentModel.load(out).classes == ["refund", "track"]

    rows = write_rows(
        tmp_path / "in.jsonl",
        [{"text": "where is my package now", "id": 7}, {"text": "   "}],
    )
    assert main(["answers", "match", "--model", str(out), "--jsonl", str(rows)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"text": "where is my package now", "id": 7, "intent": "track"}
    assert lines[1]["intent"] is None


def test_train_accepts_an_answers_file(
    example_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "m.npz"
    assert main(["answers", "train", "--data", str(example_file), "--out", str(out)]) == 0
    assert "6 intents, 63 examples" in capsys.readouterr().out


def test_eval_prints_coverage_and_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    train = write_rows(tmp_path / "train.jsonl", TRAIN_ROWS)
    test = write_rows(
        tmp_path / "test.jsonl",
        [
            {"text": "refund me", "intent": "refund"},
            {"text": "where's my parcel", "intent": "track"},
        ],
    )
    assert main(["answers", "eval", "--train", str(train), "--test", str(test), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 2 and 0 <= result["coverage"] <= 1 and result["error"] == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"intent": "x"}, ':1: "text" must be a string (missing)'),
        ({"text": "hi", "intent": ""}, ':1: "intent" must be a non-empty string'),
        ({"text": 3, "intent": "x"}, ':1: "text" must be a string (a number)'),
    ],
)
def test_train_names_a_bad_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: dict, message: str
) -> None:
    data = write_rows(tmp_path / "bad.jsonl", [row])
    assert main(["answers", "train", "--data", str(data), "--out", str(tmp_path / "m")]) == 2
    assert f"gateway answers train: {data}{message}" in capsys.readouterr().err


def test_train_refuses_a_target_error_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(tmp_path / "t.jsonl", TRAIN_ROWS)
    args = ["answers", "train", "--data", str(data), "--out", str(tmp_path / "m"), "--target-error"]
    assert main([*args, "1.5"]) == 2
    assert "--target-error must be a share in [0, 1)" in capsys.readouterr().err


def test_match_without_a_model_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = write_rows(tmp_path / "in.jsonl", [{"text": "hi"}])
    assert (
        main(["answers", "match", "--model", str(tmp_path / "no.npz"), "--jsonl", str(rows)]) == 2
    )
    assert "`gateway answers train --out PATH` writes one" in capsys.readouterr().err


def test_check_reports_a_bad_file_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"intent": "x", "answer": "y", "examples": ["z"]}\n{"oops"\n', "utf-8")
    assert main(["answers", "check", str(path)]) == 2
    assert f"gateway answers check: {path}:2: not valid JSON" in capsys.readouterr().err


def test_check_accepts_the_example(example_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["answers", "check", str(example_file)]) == 0
    assert "ok: 6 intents" in capsys.readouterr().out
