from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.feedback import FeedbackStore
from gateway.ledger import LedgerRecord, SqliteLedger
from gateway.routing.feedback_rows import feedback_rows


def rec(request_id: str, route: str, text: str | None, tenant: str = "acme") -> LedgerRecord:
    return LedgerRecord(
        request_id=request_id,
        ts=datetime(2026, 11, 1, tzinfo=UTC),
        tenant=tenant,
        requested_model="auto",
        route=route,
        model="m",
        prompt_tokens=10,
        completion_tokens=5,
        cost_micros=1,
        large_cost_micros=2,
        latency_ms=1.0,
        status=200,
        stream=False,
        request_text=text,
    )


def test_verdicts_become_training_rows_by_the_documented_mapping(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with SqliteLedger(path) as ledger:
        for r in [
            rec("a", "small", "easy one"),
            rec("b", "small", "hard one"),
            rec("c", "large", "very hard"),
            rec("d", "large", "fine on large"),
            rec("e", "small", None),
            rec("f", "small", "other tenant", tenant="globex"),
        ]:
            ledger.record(r)
        ledger.flush()
    store = FeedbackStore(path)
    assert store.record("acme", "a", "good")
    assert store.record("acme", "b", "handoff")
    assert store.record("acme", "c", "bad")
    assert store.record("acme", "d", "good")
    assert store.record("acme", "e", "bad")
    assert store.record("globex", "f", "bad")
    assert not store.record("acme", "f", "bad"), "a tenant cannot judge another's request"
    store.close()

    out = feedback_rows(path, "acme")
    assert [(r["request_id"], r["weak_correct"], r["strong_correct"]) for r in out.rows] == [
        ("a", 1, 1),
        ("b", 0, 1),
        ("c", 0, 0),
    ]
    assert out.rows[0]["prompt"] == "easy one"
    assert dict(out.left_out) == {
        "good on a large answer (says nothing about small)": 1,
        "no stored text (store_request_text is off)": 1,
    }


def test_a_missing_ledger_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass --data-dir"):
        feedback_rows(tmp_path / "nope.sqlite3", "acme")
