from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.ledger import LedgerQuery, LedgerRecord, SqliteLedger
from gateway.reports import (
    build_report,
    parse_date_bound,
    render_csv,
    render_json,
    render_table,
)

DAY = datetime(2026, 11, 26, tzinfo=UTC)


def make_record(
    request_id: str,
    *,
    tenant: str = "acme",
    route: str = "small",
    model: str | None = "smollm2-135m",
    cost: int = 0,
    large_cost: int = 0,
    status: int = 200,
    cache_hit: bool = False,
    ts: datetime = DAY + timedelta(hours=10),
) -> LedgerRecord:
    return LedgerRecord(
        request_id=request_id,
        ts=ts,
        tenant=tenant,
        requested_model="auto",
        route=route,
        model=model,
        prompt_tokens=100,
        completion_tokens=20,
        cost_micros=cost,
        large_cost_micros=large_cost,
        latency_ms=5.0,
        status=status,
        stream=False,
        cache_hit=cache_hit,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with SqliteLedger(tmp_path / "ledger.db") as led:
        led.record(make_record("a", cost=123, large_cost=2_000))
        led.record(make_record("b", cost=877, large_cost=3_000, status=500))
        led.record(
            make_record("c", route="cache", model=None, large_cost=1_500_000, cache_hit=True)
        )
        led.record(make_record("d", tenant="globex", route="large", model="gpt-4o", cost=2_500_001))
        led.flush()
        yield led


def test_build_report_total_sums_every_row(ledger: SqliteLedger) -> None:
    report = build_report(ledger, LedgerQuery())

    assert [tuple(r.key.values()) for r in report.rows] == [
        ("acme", "cache", ""),
        ("acme", "small", "smollm2-135m"),
        ("globex", "large", "gpt-4o"),
    ]
    assert report.total.key == {}
    assert report.total.requests == 4
    assert report.total.errors == 1
    assert report.total.cache_hits == 1
    assert report.total.prompt_tokens == 400
    assert report.total.cost_micros == 2_501_001
    assert report.total.large_cost_micros == 1_505_000
    assert report.total.savings_micros == 1_505_000 - 2_501_001


def test_table_has_a_header_and_a_total_line_with_the_summed_money(ledger: SqliteLedger) -> None:
    table = render_table(build_report(ledger, LedgerQuery()))
    lines = table.splitlines()

    assert lines[0].split() == [
        "tenant",
        "route",
        "model",
        "requests",
        "errors",
        "cache_hits",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "large_cost_usd",
        "savings_usd",
    ]
    assert lines[-1].split() == [
        "TOTAL",
        "4",
        "1",
        "1",
        "400",
        "80",
        "2.501001",
        "1.505000",
        "-0.996001",
    ]
    small = next(line for line in lines if "smollm2-135m" in line)
    assert small.split()[3:] == ["2", "1", "0", "200", "40", "0.001000", "0.005000", "0.004000"]
    # Aligned: every line of the table is as wide as the header or the rules.
    assert len({len(line) for line in lines if line.strip("- ")}) <= 2
    assert len(lines[1]) == len(lines[-2])


def test_table_for_an_empty_period_still_shows_a_zero_total(ledger: SqliteLedger) -> None:
    empty = LedgerQuery(since=DAY + timedelta(days=30))

    table = render_table(build_report(ledger, empty, group_by=()))

    assert table.splitlines()[-1].split() == ["TOTAL", "0", "0", "0", "0", "0"] + ["0.000000"] * 3


def test_csv_parses_back_with_exact_money_strings_and_no_total_row(ledger: SqliteLedger) -> None:
    text = render_csv(build_report(ledger, LedgerQuery(tenant="acme"), group_by=["route"]))

    rows = list(csv.DictReader(io.StringIO(text)))

    assert [r["route"] for r in rows] == ["cache", "small"]
    cache, small = rows
    assert small["cost_usd"] == "0.001000"
    assert small["large_cost_usd"] == "0.005000"
    assert small["savings_usd"] == "0.004000"
    assert cache["large_cost_usd"] == "1.500000"
    assert small["requests"] == "2" and small["errors"] == "1"
    assert "TOTAL" not in text


def test_json_carries_money_as_micros_and_usd_strings(ledger: SqliteLedger) -> None:
    since = parse_date_bound("2026-11-26")
    until = parse_date_bound("2026-11-26", end=True)
    query = LedgerQuery(tenant="globex", since=since, until=until)

    doc = json.loads(render_json(build_report(ledger, query, group_by=["model"])))

    assert doc["since"] == "2026-11-26T00:00:00+00:00"
    assert doc["until"] == "2026-11-27T00:00:00+00:00"
    assert doc["tenant"] == "globex"
    assert doc["group_by"] == ["model"]
    [row] = doc["rows"]
    assert row["model"] == "gpt-4o"
    assert row["cost_micros"] == 2_500_001
    assert row["cost_usd"] == "2.500001"
    assert row["savings_micros"] == -2_500_001
    assert row["savings_usd"] == "-2.500001"
    assert doc["total"]["requests"] == 1
    assert doc["total"]["large_cost_usd"] == "0.000000"
    assert "model" not in doc["total"]


def test_json_of_an_open_query_has_null_bounds(ledger: SqliteLedger) -> None:
    doc = json.loads(render_json(build_report(ledger, LedgerQuery())))

    assert (doc["since"], doc["until"], doc["tenant"]) == (None, None, None)
    assert doc["total"]["cost_micros"] == 2_501_001


def test_a_plain_date_means_utc_midnight() -> None:
    assert parse_date_bound("2026-11-26") == datetime(2026, 11, 26, tzinfo=UTC)


def test_a_plain_date_as_end_bound_means_the_next_midnight() -> None:
    assert parse_date_bound("2026-11-26", end=True) == datetime(2026, 11, 27, tzinfo=UTC)
    assert parse_date_bound("2026-12-31", end=True) == datetime(2027, 1, 1, tzinfo=UTC)


def test_until_a_date_includes_the_last_microsecond_of_that_day(ledger: SqliteLedger) -> None:
    last = datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=UTC)
    ledger.record(make_record("late", tenant="initech", ts=last))
    ledger.record(make_record("next-day", tenant="initech", ts=last + timedelta(microseconds=1)))
    ledger.flush()

    query = LedgerQuery(
        tenant="initech",
        since=parse_date_bound("2026-11-26"),
        until=parse_date_bound("2026-11-26", end=True),
    )

    assert [r.request_id for r in ledger.records(query)] == ["late"]


def test_an_iso_datetime_with_an_offset_is_the_exact_instant_even_as_end_bound() -> None:
    expected = datetime(2026, 11, 26, 9, 30, tzinfo=timezone(timedelta(hours=8)))

    assert parse_date_bound("2026-11-26T09:30:00+08:00") == expected
    assert parse_date_bound("2026-11-26T09:30:00+08:00", end=True) == expected
    assert parse_date_bound("2026-11-26T01:30:00Z") == expected


@pytest.mark.parametrize("text", ["26/11/2026", "2026-02-30", "yesterday", "2026-11-26T09:30:00"])
def test_an_unparseable_or_naive_bound_names_the_accepted_formats(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD") as info:
        parse_date_bound(text)

    assert "ISO 8601 datetime with an offset" in str(info.value)
    assert repr(text) in str(info.value)
