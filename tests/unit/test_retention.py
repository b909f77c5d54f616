"""Retention: pruning moves old days into daily aggregates without changing any report."""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.ledger import MIGRATIONS, LedgerQuery, LedgerRecord, SqliteLedger
from gateway.reports import SpendQuery, build_spend_report, render_spend_json
from gateway.retention import EXPORT_FIELDS, export, prune
from gateway.timezones import TenantZones

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
ZONES = TenantZones({"acme": "America/New_York", "globex": "Asia/Shanghai"})
GROUPINGS = [
    ("day",),
    ("month",),
    ("tier",),
    ("model",),
    ("user",),
    ("tenant", "day", "tier"),
    ("month", "user", "status_class"),
]


def record(i: int, ts: datetime, rng: random.Random) -> LedgerRecord:
    route = rng.choice(["small", "small", "large", "cache"])
    prompt, completion = rng.randint(1, 3_000), rng.randint(1, 800)
    large = prompt * 2_500 // 1_000 + completion * 10
    return LedgerRecord(
        request_id=f"r{i}",
        ts=ts,
        tenant=rng.choice(["acme", "globex", "initech"]),
        requested_model="auto",
        route=route,
        model=None if route == "cache" else f"{route}-model",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_micros={"small": large // 20, "large": large, "cache": 0}[route],
        large_cost_micros=large,
        latency_ms=1.0,
        status=rng.choice([200, 200, 200, 429, 500]),
        stream=False,
        cache_hit=route == "cache",
        end_user=rng.choice(["alice", "bob", None]),
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    rng = random.Random(5)
    with SqliteLedger(tmp_path / "ledger.sqlite3") as led:
        # 80 days back from NOW, across New York's switch from DST on 2026-11-01.
        start = NOW - timedelta(days=80)
        for i in range(3_000):
            led.record(record(i, start + timedelta(seconds=rng.randrange(80 * 86_400)), rng))
        led.flush()
        yield led


def reports(led: SqliteLedger, tenant: str | None = None, **bounds: datetime) -> list[str]:
    return [
        render_spend_json(
            build_spend_report(led, SpendQuery(tenant=tenant, group_by=g, **bounds), ZONES)
        )
        for g in GROUPINGS
    ]


def test_reports_are_identical_before_and_after_pruning(ledger: SqliteLedger) -> None:
    before = reports(ledger)
    # New York's local days 2026-10-20 .. 2026-11-14, across its switch from DST on 11-01.
    acme = {
        "since": datetime(2026, 10, 20, 4, tzinfo=UTC),
        "until": datetime(2026, 11, 15, 5, tzinfo=UTC),
    }
    before_acme = reports(ledger, "acme", **acme)

    done = prune(ledger, keep_days=7, zones=ZONES, now=NOW)

    assert {p.tenant for p in done} == {"acme", "globex", "initech"}
    assert sum(p.records for p in done) > 2_500
    assert ledger.count(LedgerQuery()) == 3_000 - sum(p.records for p in done)
    assert reports(ledger) == before
    assert reports(ledger, "acme", **acme) == before_acme


def test_a_range_that_cuts_a_pruned_day_counts_that_day_whole_if_it_starts_inside(
    ledger: SqliteLedger,
) -> None:
    noon = {"since": datetime(2026, 10, 20, 16, tzinfo=UTC)}  # 12:00 in New York
    raw = build_spend_report(ledger, SpendQuery(tenant="acme", **noon), ZONES).total.requests

    prune(ledger, keep_days=7, zones=ZONES, now=NOW)

    rolled = build_spend_report(ledger, SpendQuery(tenant="acme", **noon), ZONES).total.requests
    assert rolled < raw  # 10-20 starts before the bound: left out once it is one aggregate


def test_each_tenant_keeps_whole_local_days(ledger: SqliteLedger) -> None:
    done = {p.tenant: p for p in prune(ledger, keep_days=7, zones=ZONES, now=NOW)}

    assert done["acme"].kept_from == "2026-11-19" and done["acme"].time_zone == "America/New_York"
    assert done["globex"].kept_from == "2026-11-19" and done["globex"].time_zone == "Asia/Shanghai"
    # Globex's oldest raw record is at or after its local midnight (16:00 UTC the day before).
    oldest = min(r.ts for r in ledger.records(LedgerQuery(tenant="globex")))
    assert oldest >= datetime(2026, 11, 18, 16, tzinfo=UTC)


def test_pruning_twice_and_a_late_record_add_up(ledger: SqliteLedger) -> None:
    prune(ledger, keep_days=7, zones=ZONES, now=NOW)
    late = record(99_999, datetime(2026, 10, 1, 12, tzinfo=UTC), random.Random(1))
    ledger.record(late)
    ledger.flush()
    before = reports(ledger)

    again = prune(ledger, keep_days=7, zones=ZONES, now=NOW)

    assert [(p.tenant, p.records) for p in again] == [(late.tenant, 1)]
    assert reports(ledger) == before
    assert prune(ledger, keep_days=7, zones=ZONES, now=NOW) == []


def test_keep_days_below_one_is_refused(ledger: SqliteLedger) -> None:
    with pytest.raises(ValueError, match="--keep-days 1 or more"):
        prune(ledger, keep_days=0, zones=ZONES, now=NOW)


def test_daily_aggregates_is_a_named_migration_in_order() -> None:
    names = [name for name, _ in MIGRATIONS]
    assert "0006_daily_aggregates" in names
    assert names == sorted(names)


def test_the_aggregates_table_exists_in_a_new_ledger(ledger: SqliteLedger) -> None:
    conn = sqlite3.connect(ledger.path)
    try:
        applied = {n for (n,) in conn.execute("SELECT name FROM schema_migrations")}
        columns = [row[1] for row in conn.execute("PRAGMA table_info(daily_aggregates)")]
    finally:
        conn.close()
    assert "0006_daily_aggregates" in applied
    assert columns[:4] == ["tenant", "day", "time_zone", "start_us"]


def test_export_csv_has_a_header_and_one_row_per_record(ledger: SqliteLedger) -> None:
    out = io.StringIO()
    query = LedgerQuery(tenant="acme", since=NOW - timedelta(days=3), until=NOW)

    count = export(ledger, query, "csv", out)

    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert count == len(rows) == ledger.count(query) > 0
    assert list(rows[0]) == list(EXPORT_FIELDS)
    assert {r["tenant"] for r in rows} == {"acme"}
    first = rows[0]
    assert int(first["cost_micros"]) * 1 == round(float(first["cost_usd"]) * 1_000_000)
    assert first["cache_hit"] in ("true", "false")
    assert "request_text" not in first


def test_export_jsonl_is_one_object_per_line(ledger: SqliteLedger) -> None:
    out = io.StringIO()
    count = export(ledger, LedgerQuery(tenant="globex"), "jsonl", out)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == count > 0
    assert set(lines[0]) == set(EXPORT_FIELDS)
    assert lines[0]["ts"].endswith("+00:00")
    assert isinstance(lines[0]["cache_hit"], bool)


def test_export_in_an_unknown_format_names_the_choices(ledger: SqliteLedger) -> None:
    with pytest.raises(ValueError, match="use csv or jsonl"):
        export(ledger, LedgerQuery(), "xml", io.StringIO())
