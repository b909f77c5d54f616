"""Spend reports count the requests each answer-reuse layer answered and what they saved, from
the ledger's ``cache_layer`` column, in JSON and in the text table."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.ledger import MIGRATIONS, LedgerQuery, LedgerRecord, SqliteLedger
from gateway.reports import SpendQuery, build_spend_report, render_spend_json, render_spend_table
from gateway.timezones import TenantZones

DAY = datetime(2026, 11, 26, 10, tzinfo=UTC)


def record(i: int, layer: str | None, *, tenant: str = "acme", saved: int = 1_000) -> LedgerRecord:
    hit = layer is not None
    return LedgerRecord(
        request_id=f"r{i}",
        ts=DAY + timedelta(seconds=i),
        tenant=tenant,
        requested_model="auto",
        route="cache" if hit else "small",
        model="gpt-4o",
        prompt_tokens=10,
        completion_tokens=5,
        cost_micros=0 if hit else 200,
        large_cost_micros=saved,
        latency_ms=1.0,
        status=200,
        stream=False,
        cache_hit=hit,
        cache_layer=layer,
        intent="track_order" if layer == "answers" else None,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as led:
        for i, layer in enumerate(["exact", "answers", "answers", "semantic", None]):
            led.record(record(i, layer))
        led.record(record(9, "answers", tenant="globex", saved=5_000))
        led.flush()
        yield led


def test_the_ledger_keeps_the_layer_and_the_intent(ledger: SqliteLedger) -> None:
    rows = {r.request_id: r for r in ledger.records(LedgerQuery(tenant="acme"))}
    assert (rows["r1"].cache_layer, rows["r1"].intent) == ("answers", "track_order")
    assert (rows["r4"].cache_layer, rows["r4"].intent) == (None, None)


def test_json_counts_each_layer_with_its_savings_for_one_tenant(ledger: SqliteLedger) -> None:
    report = build_spend_report(ledger, SpendQuery(tenant="acme"), TenantZones())
    doc = json.loads(render_spend_json(report))["cache_layers"]

    assert doc["requests"] == 4
    assert {k: v["requests"] for k, v in doc["layers"].items()} == {
        "exact": 1,
        "answers": 2,
        "semantic": 1,
    }
    assert doc["layers"]["answers"]["savings_micros"] == 2_000
    assert doc["layers"]["answers"]["cost_micros"] == 0
    assert doc["savings_usd"] == "0.004000"


def test_the_table_ends_with_a_line_per_layer_and_other_tenants_stay_out(
    ledger: SqliteLedger,
) -> None:
    table = render_spend_table(build_spend_report(ledger, SpendQuery(tenant="acme"), TenantZones()))
    every = build_spend_report(ledger, SpendQuery(), TenantZones())

    assert (
        "answered without a model: 1 exact (saved 0.001000), 2 answers (saved 0.002000), "
        "1 semantic (saved 0.001000) USD"
    ) in table
    assert every.cache_layers is not None and every.cache_layers.of("answers").requests == 3


def test_a_period_without_hits_has_no_layer_section(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "empty.sqlite3") as led:
        led.record(record(1, None))
        led.flush()
        report = build_spend_report(led, SpendQuery(), TenantZones())
    assert report.cache_layers is None
    assert json.loads(render_spend_json(report))["cache_layers"] is None
    assert "answered without a model" not in render_spend_table(report)


def test_a_ledger_migrated_past_0013_before_these_columns_existed_gets_them(
    tmp_path: Path,
) -> None:
    # 0011/0012 were committed after 0013: a ledger that already has 0013 applies them later.
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for name, sql in MIGRATIONS:
        if name.startswith(("0011_", "0012_")):
            continue
        conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (name,))
    conn.commit()
    conn.close()

    with SqliteLedger(path) as led:
        led.record(record(1, "answers"))
        led.flush()
        (back,) = list(led.records(LedgerQuery()))

    assert (back.cache_layer, back.intent) == ("answers", "track_order")
