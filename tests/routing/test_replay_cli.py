"""``gateway replay`` and ``gateway train-router --feedback-tenant`` through the real CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.feedback import FeedbackStore
from gateway.ledger import LedgerRecord, SqliteLedger
from tests.routing.configs import priced_classifier_config


def write_config(path: Path, threshold: float) -> Path:
    path.write_text(priced_classifier_config(threshold, store_request_text=True))
    return path


def record(i: int, route: str, difficulty: float, day: int = 1) -> LedgerRecord:
    return LedgerRecord(
        request_id=f"r{i}",
        ts=datetime(2026, 11, day, 12, tzinfo=UTC),
        tenant="acme",
        requested_model="auto",
        route=route,
        model=None,
        prompt_tokens=100,
        completion_tokens=50,
        cost_micros=200 if route == "small" else 2000,
        large_cost_micros=2000,
        latency_ms=1.0,
        status=200,
        stream=False,
        features={"prompt_tokens": 100, "turns": 1, "difficulty": difficulty},
        request_text=f"question number {i}",
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        for i, (route, score) in enumerate([("small", 0.1), ("small", 0.3), ("large", 0.6)]):
            ledger.record(record(i, route, score))
        ledger.record(record(9, "small", 0.9, day=20))
        ledger.flush()
    return tmp_path


def test_replay_of_the_ledger_prints_mix_and_cost_as_json(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(data_dir / "new.yaml", 0.2)
    code = main(
        [
            "replay",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--until",
            "2026-11-02",
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    body = json.loads(out.out)
    assert body["replayed"] == 3, "--until leaves the 20th out"
    assert body["recorded"]["routes"] == {"large": 1, "small": 2}
    assert body["replayed_under_new_config"]["routes"] == {"large": 2, "small": 1}
    assert body["cost_change_micros"] == 1800
    assert body["transitions"] == {"small -> large": 1}


def test_replay_table_output(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(data_dir / "new.yaml", 0.95)
    assert main(["replay", "--config", str(config), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "replayed 4, decisions changed 1" in out
    assert "large -> small: 1" in out


def test_replay_of_supplied_requests_compares_with_the_current_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"messages": [{"role": "user", "content": "hello"}]}) + "\n")
    new, now = write_config(tmp_path / "new.yaml", 0.0), write_config(tmp_path / "now.yaml", 1.0)
    code = main(
        [
            "replay",
            "--config",
            str(new),
            "--requests",
            str(requests),
            "--against",
            str(now),
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    body = json.loads(out.out)
    assert body["current_config"]["routes"] == {"small": 1}
    assert body["replayed_under_new_config"]["routes"] == {"large": 1}


def test_replay_errors_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "new.yaml", 0.5)
    assert main(["replay", "--config", str(config), "--data-dir", str(tmp_path / "none")]) == 2
    assert "no ledger at" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("router: [\n")
    assert main(["replay", "--config", str(broken), "--data-dir", str(tmp_path)]) == 2
    assert "broken.yaml" in capsys.readouterr().err


def test_train_router_reads_the_tenants_feedback(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = FeedbackStore(data_dir / "ledger.sqlite3")
    assert store.record("acme", "r0", "good")
    assert store.record("acme", "r1", "bad")
    assert store.record("acme", "r2", "good")  # on large: says nothing about small
    store.close()
    code = main(
        [
            "train-router",
            "--feedback-tenant",
            "acme",
            "--data-dir",
            str(data_dir),
            "--out",
            str(data_dir / "w.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "feedback: 2 row(s) from tenant 'acme'" in err
    assert "feedback: left out 1: good on a large answer" in err
    assert "training needs at least 20" in err


def test_train_router_needs_data_or_feedback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-router", "--out", "x.json"]) == 2
    assert "--feedback-tenant" in capsys.readouterr().err
