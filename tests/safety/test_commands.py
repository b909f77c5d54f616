"""``gateway mask`` and ``gateway handoff``, run in-process through the real argument parser."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main

DATA = Path(__file__).parent / "data"


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def output_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_mask_adds_the_masked_text_and_the_found_spans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"text": "call me on 13812345678, 订单号13912345678", "id": 7},
        {"text": "no personal data"},
        {"text": ""},
    ]
    assert main(["mask", "--jsonl", str(write_rows(tmp_path / "in.jsonl", rows))]) == 0
    out = output_rows(capsys.readouterr().out)
    assert out[0] == {
        "text": "call me on 13812345678, 订单号13912345678",
        "id": 7,
        "masked": "call me on [PHONE_1], 订单号13912345678",
        "found": [{"type": "phone", "start": 11, "end": 22}],
    }
    assert out[1]["masked"] == "no personal data" and out[1]["found"] == []
    assert out[2]["masked"] == ""


def test_mask_reads_stdin_and_writes_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "mail a@b.com"}\n\n'))
    out = tmp_path / "out.jsonl"
    assert main(["mask", "--jsonl", "-", "--out", str(out), "--types", "email,phone"]) == 0
    assert output_rows(out.read_text("utf-8"))[0]["masked"] == "mail [EMAIL_1]"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": 5}\n', r"in\.jsonl:1: a row needs \"text\" \(a string\), got a number"),
        ('{"text": "ok"}\nnot json\n', r"in\.jsonl:2: not valid JSON"),
        ("[1, 2]\n", r"in\.jsonl:1: a row must be a JSON object, got a list"),
    ],
)
def test_mask_names_the_file_and_line_of_a_bad_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content, "utf-8")
    assert main(["mask", "--jsonl", str(path)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_mask_refuses_unknown_types_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_rows(tmp_path / "in.jsonl", [{"text": "x"}])
    assert main(["mask", "--jsonl", str(path), "--types", "phone,passport"]) == 2
    assert "unknown type(s) passport; choose from phone" in capsys.readouterr().err
    assert main(["mask", "--jsonl", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_mask_eval_scores_labelled_rows(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "masking_labelled.jsonl"
    assert main(["mask", "--jsonl", str(path), "--eval", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["exact"]["card"]["labelled"] >= 20
    assert scores["exact"]["card"]["recall"] >= 0.98
    assert main(["mask", "--jsonl", str(path), "--eval"]) == 0
    assert "| cn_id |" in capsys.readouterr().out


def test_mask_eval_needs_entities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rows(tmp_path / "in.jsonl", [{"text": "x"}])
    assert main(["mask", "--jsonl", str(path), "--eval"]) == 2
    assert 'with --eval a row needs "entities"' in capsys.readouterr().err


def test_handoff_adds_the_reason_or_null(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"text": "转人工，我的快递到哪了"},
        {"text": "Where is my order?"},
        {
            "messages": [
                {"role": "user", "content": "When will my order arrive?"},
                {"role": "assistant", "content": "In 3-5 days."},
                {"role": "user", "content": "When will my order arrive?"},
            ]
        },
        {"text": "The refund was denied and I don't accept it."},
    ]
    assert main(["handoff", "--jsonl", str(write_rows(tmp_path / "in.jsonl", rows))]) == 0
    assert [r["handoff"] for r in output_rows(capsys.readouterr().out)] == [
        "human_request",
        None,
        "repeated_question",
        "intent:refund_dispute",
    ]


def test_handoff_takes_a_tenants_intents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intents = tmp_path / "intents.json"
    intents.write_text(json.dumps({"warranty": ["warranty ... broken"]}), "utf-8")
    rows = write_rows(
        tmp_path / "in.jsonl",
        [{"text": "the warranty covers it and it is broken"}, {"text": "refund was denied"}],
    )
    assert main(["handoff", "--jsonl", str(rows), "--intents", str(intents)]) == 0
    assert [r["handoff"] for r in output_rows(capsys.readouterr().out)] == [
        "intent:warranty",
        None,
    ]
    intents.write_text('{"warranty": "not a list"}', "utf-8")
    assert main(["handoff", "--jsonl", str(rows), "--intents", str(intents)]) == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_handoff_rejects_rows_without_a_conversation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_rows(tmp_path / "in.jsonl", [{"text": "ok"}, {"messages": "hi"}])
    assert main(["handoff", "--jsonl", str(path)]) == 2
    assert 'in.jsonl:2: "messages" must be a list' in capsys.readouterr().err


def test_handoff_eval_scores_every_signal(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "handoff_labelled.jsonl"
    assert main(["handoff", "--jsonl", str(path), "--eval", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {
        "legal_threat",
        "human_request",
        "anger",
        "intent",
        "repeated_question",
        "any",
    }
    assert scores["any"]["recall"] >= 0.9


def test_help_lists_mask_and_handoff(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert re.search(r"^\s+mask\s", out, re.MULTILINE)
    assert re.search(r"^\s+handoff\s", out, re.MULTILINE)


def test_the_console_script_masks_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "mask", "--jsonl", "-"],
        input='{"text": "卡号 4111 1111 1111 1111"}\n',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["masked"] == "卡号 [CARD_1]"
