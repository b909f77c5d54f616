from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger import (
    MIGRATIONS,
    LedgerError,
    LedgerQuery,
    LedgerRecord,
    SqliteLedger,
)

T0 = datetime(2026, 11, 26, 9, 30, 0, 123456, tzinfo=UTC)


def make_record(**overrides: Any) -> LedgerRecord:
    base = LedgerRecord(
        request_id="req-1",
        ts=T0,
        tenant="acme",
        requested_model="auto",
        route="small",
        model="smollm2-135m",
        prompt_tokens=120,
        completion_tokens=30,
        cost_micros=7,
        large_cost_micros=450,
        latency_ms=12.345,
        status=200,
        stream=False,
    )
    return replace(base, **overrides)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ledger.db"


@pytest.fixture
def ledger(db_path: Path) -> Iterator[SqliteLedger]:
    with SqliteLedger(db_path) as led:
        yield led


def query_db(path: Path, sql: str) -> list[Any]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def test_a_record_round_trips_with_every_field_exact(ledger: SqliteLedger) -> None:
    rec = make_record(
        request_id="req-full",
        route="large",
        model="gpt-4o",
        stream=True,
        cache_hit=True,
        usage_estimated=True,
        status=499,
        error_code="client_disconnected",
        end_user="user-42",
        reasons=("hard: refund dispute", "budget ok"),
        features={"len": 42, "score": 0.8125, "lang": "zh", "has_order_id": True},
        request_text="我的订单 #123 在哪里？",
    )
    ledger.record(rec)
    ledger.flush()

    [back] = list(ledger.records(LedgerQuery()))

    assert back == rec
    assert back.ts.tzinfo is not None and back.ts.utcoffset() == timedelta(0)
    assert back.reasons == ("hard: refund dispute", "budget ok")
    assert type(back.features["len"]) is int
    assert type(back.features["score"]) is float
    assert back.features["has_order_id"] is True
    assert back.savings_micros == 450 - 7


def test_optional_fields_round_trip_as_none_and_empty(ledger: SqliteLedger) -> None:
    rec = make_record(route="none", model=None, cost_micros=0, large_cost_micros=0, status=401)
    ledger.record(rec)
    ledger.flush()

    assert list(ledger.records(LedgerQuery())) == [rec]


def test_flush_makes_records_visible_to_a_second_ledger_on_the_same_file(db_path: Path) -> None:
    with SqliteLedger(db_path) as writer, SqliteLedger(db_path) as reader:
        for i in range(3):
            writer.record(make_record(request_id=f"req-{i}"))
        writer.flush()

        assert reader.count(LedgerQuery()) == 3
        assert [r.request_id for r in reader.records(LedgerQuery())] == ["req-0", "req-1", "req-2"]


def test_opening_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    with SqliteLedger(path):
        pass

    assert path.exists()
    assert query_db(path, "PRAGMA journal_mode") == [("wal",)]


def test_migrations_are_recorded_by_name_and_not_reapplied_on_reopen(db_path: Path) -> None:
    with SqliteLedger(db_path) as first:
        first.record(make_record())
    applied = query_db(db_path, "SELECT name, applied_at FROM schema_migrations ORDER BY name")

    with SqliteLedger(db_path) as second:
        assert second.count(LedgerQuery()) == 1
    reapplied = query_db(db_path, "SELECT name, applied_at FROM schema_migrations ORDER BY name")

    assert [name for name, _ in applied] == [name for name, _ in MIGRATIONS]
    assert reapplied == applied
    indexes = {name for (name,) in query_db(db_path, "SELECT name FROM sqlite_master")}
    assert {"requests", "requests_tenant_ts", "requests_ts"} <= indexes


def test_records_filter_by_tenant_with_since_inclusive_and_until_exclusive(
    ledger: SqliteLedger,
) -> None:
    hour = timedelta(hours=1)
    for i in range(4):
        ledger.record(make_record(request_id=f"acme-{i}", ts=T0 + i * hour))
        ledger.record(make_record(request_id=f"globex-{i}", tenant="globex", ts=T0 + i * hour))
    ledger.flush()

    query = LedgerQuery(tenant="acme", since=T0 + hour, until=T0 + 3 * hour)

    assert [r.request_id for r in ledger.records(query)] == ["acme-1", "acme-2"]
    assert ledger.count(query) == 2
    assert ledger.count(LedgerQuery(since=T0 + 3 * hour)) == 2
    assert ledger.count(LedgerQuery(until=T0)) == 0
    assert ledger.count(LedgerQuery()) == 8


def test_records_are_ordered_by_ts_then_insertion(ledger: SqliteLedger) -> None:
    later = T0 + timedelta(seconds=1)
    ledger.record(make_record(request_id="late", ts=later))
    ledger.record(make_record(request_id="early-a", ts=T0))
    ledger.record(make_record(request_id="early-b", ts=T0))
    ledger.flush()

    ids = [r.request_id for r in ledger.records(LedgerQuery())]

    assert ids == ["early-a", "early-b", "late"]


def test_records_iterates_past_one_page(ledger: SqliteLedger) -> None:
    # More than the reader's page size, with equal timestamps across the page boundary.
    for i in range(2500):
        ledger.record(make_record(request_id=str(i), ts=T0 + timedelta(seconds=i // 3)))
    ledger.flush()

    ids = [r.request_id for r in ledger.records(LedgerQuery())]

    assert ids == [str(i) for i in range(2500)]


def test_summarize_groups_and_sums_errors_cache_hits_and_savings(ledger: SqliteLedger) -> None:
    ledger.record(make_record(route="small", cost_micros=10, large_cost_micros=100))
    ledger.record(make_record(route="small", cost_micros=20, large_cost_micros=200, status=400))
    ledger.record(
        make_record(
            route="cache",
            model=None,
            cache_hit=True,
            cost_micros=0,
            large_cost_micros=300,
            prompt_tokens=5,
            completion_tokens=6,
        )
    )
    ledger.record(make_record(tenant="globex", route="large", model="gpt-4o", cost_micros=999))
    ledger.flush()

    rows = ledger.summarize(LedgerQuery(tenant="acme"), ["tenant", "route", "model"])

    assert [dict(r.key) for r in rows] == [
        {"tenant": "acme", "route": "cache", "model": ""},
        {"tenant": "acme", "route": "small", "model": "smollm2-135m"},
    ]
    cache, small = rows
    assert (cache.requests, cache.errors, cache.cache_hits) == (1, 0, 1)
    assert (cache.prompt_tokens, cache.completion_tokens) == (5, 6)
    assert (cache.cost_micros, cache.large_cost_micros, cache.savings_micros) == (0, 300, 300)
    assert (small.requests, small.errors, small.cache_hits) == (2, 1, 0)
    assert (small.prompt_tokens, small.completion_tokens) == (240, 60)
    assert (small.cost_micros, small.large_cost_micros, small.savings_micros) == (30, 300, 270)


def test_summarize_by_utc_day_and_status_class(ledger: SqliteLedger) -> None:
    late = datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=UTC)
    ledger.record(make_record(ts=late, status=200))
    ledger.record(make_record(ts=late + timedelta(microseconds=1), status=499))
    ledger.record(make_record(ts=late + timedelta(microseconds=2), status=503))
    ledger.flush()

    rows = ledger.summarize(LedgerQuery(), ("day", "status_class"))

    assert [(dict(r.key), r.requests, r.errors) for r in rows] == [
        ({"day": "2026-11-26", "status_class": "2xx"}, 1, 0),
        ({"day": "2026-11-27", "status_class": "4xx"}, 1, 1),
        ({"day": "2026-11-27", "status_class": "5xx"}, 1, 1),
    ]


def test_summarize_without_group_by_gives_one_total_row_or_none(ledger: SqliteLedger) -> None:
    assert ledger.summarize(LedgerQuery(), []) == []

    ledger.record(make_record(cost_micros=3))
    ledger.record(make_record(cost_micros=4))
    ledger.flush()
    [row] = ledger.summarize(LedgerQuery(), [])

    assert (dict(row.key), row.requests, row.cost_micros) == ({}, 2, 7)


def test_summarize_with_unknown_group_by_raises_naming_the_allowed_columns(
    ledger: SqliteLedger,
) -> None:
    with pytest.raises(ValueError, match="'end_user'") as info:
        ledger.summarize(LedgerQuery(), ["tenant", "end_user"])

    for allowed in ("tenant", "route", "model", "day", "status_class"):
        assert allowed in str(info.value)


def test_naive_timestamps_are_rejected_in_records_and_queries(ledger: SqliteLedger) -> None:
    naive = datetime(2026, 11, 26, 9, 30)  # noqa: DTZ001 - the point of the test

    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record(make_record(ts=naive))
    with pytest.raises(ValueError, match="timezone-aware"):
        LedgerQuery(since=naive)


def test_a_thousand_records_from_four_threads_all_land(ledger: SqliteLedger) -> None:
    start = threading.Barrier(4)

    def worker(n: int) -> None:
        start.wait()
        for i in range(250):
            ledger.record(make_record(request_id=f"{n}-{i}", tenant=f"t{n}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.flush()

    assert ledger.count(LedgerQuery()) == 1000
    assert ledger.count(LedgerQuery(tenant="t3")) == 250
    assert len({r.request_id for r in ledger.records(LedgerQuery())}) == 1000


def test_close_commits_what_is_queued(db_path: Path) -> None:
    led = SqliteLedger(db_path)
    for i in range(10):
        led.record(make_record(request_id=str(i)))
    led.close()

    assert query_db(db_path, "SELECT COUNT(*) FROM requests") == [(10,)]


def test_record_after_close_raises_and_close_is_idempotent(db_path: Path) -> None:
    led = SqliteLedger(db_path)
    led.close()
    led.close()

    with pytest.raises(LedgerError, match="closed"):
        led.record(make_record())
    with pytest.raises(LedgerError, match="closed"):
        led.count(LedgerQuery())


def test_flush_times_out_while_the_database_is_locked_and_the_records_are_kept(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SqliteLedger(db_path, busy_timeout_ms=20) as led:
        # Another process holding the write lock, as a long migration or a stuck writer would.
        with closing(sqlite3.connect(db_path, isolation_level=None)) as blocker:
            blocker.execute("BEGIN EXCLUSIVE")
            with caplog.at_level(logging.ERROR, logger="gateway.ledger"):
                led.record(make_record(request_id="kept"))
                with pytest.raises(LedgerError, match="has not committed within"):
                    led.flush(timeout=0.3)
            blocker.execute("ROLLBACK")

        led.flush(timeout=10)

        assert [r.request_id for r in led.records(LedgerQuery())] == ["kept"]
    assert any("writing 1 records failed" in r.getMessage() for r in caplog.records)
