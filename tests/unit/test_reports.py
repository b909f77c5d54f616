from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.ledger import LedgerQuery, LedgerRecord, SqliteLedger
from gateway.reports import (
    BudgetStatus,
    SpendQuery,
    build_report,
    build_spend_report,
    format_usd_cents,
    parse_date_bound,
    parse_group_by,
    render_csv,
    render_json,
    render_spend_csv,
    render_spend_json,
    render_spend_table,
    render_table,
)
from gateway.timezones import TenantZones

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


# -- spend reports: local days, reconciliation, shapes ----------------------------------------

SMALL_IN, SMALL_OUT = Decimal("0.15"), Decimal("0.60")  # USD per million tokens
LARGE_IN, LARGE_OUT = Decimal("2.50"), Decimal("10.00")


def priced(prompt: int, completion: int, per_in: Decimal, per_out: Decimal) -> int:
    """Micros for known tokens and prices, computed here independently of gateway.pricing."""
    return int((prompt * per_in + completion * per_out).to_integral_value())


def spend_record(
    request_id: str,
    ts: datetime,
    *,
    tenant: str = "acme",
    route: str = "small",
    prompt: int = 1_000,
    completion: int = 500,
    user: str | None = None,
    status: int = 200,
) -> LedgerRecord:
    cache = route == "cache"
    price = (LARGE_IN, LARGE_OUT) if route == "large" else (SMALL_IN, SMALL_OUT)
    return LedgerRecord(
        request_id=request_id,
        ts=ts,
        tenant=tenant,
        requested_model="auto",
        route=route,
        model=None if cache else {"small": "gpt-4o-mini", "large": "gpt-4o"}[route],
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_micros=0 if cache else priced(prompt, completion, *price),
        large_cost_micros=priced(prompt, completion, LARGE_IN, LARGE_OUT),
        latency_ms=1.0,
        status=status,
        stream=False,
        cache_hit=cache,
        end_user=user,
    )


@pytest.fixture
def spend_ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with SqliteLedger(tmp_path / "spend.db") as led:
        yield led


UTC_ZONES = TenantZones()


def test_totals_reconcile_to_the_cent_with_known_tokens_and_prices(
    spend_ledger: SqliteLedger,
) -> None:
    # 120 small requests of 1,000 in / 500 out: 1,000 x 0.15 + 500 x 0.60 = 450 micros each.
    for i in range(120):
        spend_ledger.record(spend_record(f"s{i}", DAY + timedelta(minutes=i)))
    # 7 large ones of 12,345 in / 678 out: 30,862.5 + 6,780 -> 37,642 micros each (rounded once).
    for i in range(7):
        spend_ledger.record(
            spend_record(f"l{i}", DAY, route="large", prompt=12_345, completion=678)
        )
    spend_ledger.flush()

    report = build_spend_report(spend_ledger, SpendQuery(group_by=("tier",)), UTC_ZONES)

    by_tier = {r.key["tier"]: r for r in report.rows}
    assert by_tier["small"].cost_micros == 120 * 450 == 54_000
    assert by_tier["large"].cost_micros == 7 * 37_642
    assert report.total.cost_micros == 54_000 + 263_494
    assert format_usd_cents(report.total.cost_micros) == "$0.32"  # 0.317494 to the cent
    doc = json.loads(render_spend_json(report))
    assert doc["total"]["cost_usd"] == "0.317494"
    assert doc["total"]["input_tokens"] == 120 * 1_000 + 7 * 12_345
    assert doc["total"]["output_tokens"] == 120 * 500 + 7 * 678
    # Savings: the same tokens on the large model (7,500 micros each small request) minus cost.
    assert by_tier["small"].savings_micros == 120 * (7_500 - 450)
    assert by_tier["large"].savings_micros == 0


def test_cache_hits_cost_nothing_and_count_their_savings(spend_ledger: SqliteLedger) -> None:
    spend_ledger.record(spend_record("miss", DAY))
    spend_ledger.record(spend_record("hit1", DAY, route="cache"))
    spend_ledger.record(spend_record("hit2", DAY, route="cache"))
    spend_ledger.flush()

    report = build_spend_report(spend_ledger, SpendQuery(group_by=("tier",)), UTC_ZONES)

    cache = next(r for r in report.rows if r.key["tier"] == "cache")
    assert (cache.requests, cache.cache_hits, cache.cost_micros) == (2, 2, 0)
    assert cache.savings_micros == 2 * 7_500
    assert report.total.cache_hits == 2
    assert report.total.savings_micros == 2 * 7_500 + (7_500 - 450)


def test_a_record_at_2330_utc_is_on_the_next_day_in_shanghai(spend_ledger: SqliteLedger) -> None:
    spend_ledger.record(spend_record("late", datetime(2026, 11, 26, 23, 30, tzinfo=UTC)))
    spend_ledger.record(spend_record("early", datetime(2026, 11, 26, 15, 59, tzinfo=UTC)))
    spend_ledger.flush()
    shanghai = TenantZones({"acme": "Asia/Shanghai"})

    local = build_spend_report(spend_ledger, SpendQuery(tenant="acme"), shanghai)
    utc = build_spend_report(spend_ledger, SpendQuery(tenant="acme"), UTC_ZONES)

    assert [(r.key["day"], r.requests) for r in local.rows] == [
        ("2026-11-26", 1),  # 23:59 local
        ("2026-11-27", 1),  # 07:30 local
    ]
    assert local.time_zone == "Asia/Shanghai"
    assert [(r.key["day"], r.requests) for r in utc.rows] == [("2026-11-26", 2)]


def test_a_day_on_the_shanghai_calendar_is_the_from_to_range() -> None:
    from gateway.timezones import parse_bound, zone

    tz = zone("Asia/Shanghai")
    assert parse_bound("2026-11-27", tz) == datetime(2026, 11, 26, 16, tzinfo=UTC)
    assert parse_bound("2026-11-27", tz, end=True) == datetime(2026, 11, 27, 16, tzinfo=UTC)


def test_days_follow_daylight_saving_time_in_new_york(spend_ledger: SqliteLedger) -> None:
    # New York leaves DST on 2026-11-01 at 02:00 local (06:00 UTC): that day has 25 hours.
    stamps = {
        "a": datetime(2026, 10, 31, 3, 59, tzinfo=UTC),  # 2026-10-30 23:59 EDT
        "b": datetime(2026, 10, 31, 4, 0, tzinfo=UTC),  # 2026-10-31 00:00 EDT
        "c": datetime(2026, 11, 1, 4, 30, tzinfo=UTC),  # 2026-11-01 00:30 EDT
        "d": datetime(2026, 11, 2, 4, 30, tzinfo=UTC),  # 2026-11-01 23:30 EST
        "e": datetime(2026, 11, 2, 5, 0, tzinfo=UTC),  # 2026-11-02 00:00 EST
    }
    for name, ts in stamps.items():
        spend_ledger.record(spend_record(name, ts))
    spend_ledger.flush()
    zones = TenantZones({"acme": "America/New_York"})

    days = build_spend_report(spend_ledger, SpendQuery(tenant="acme"), zones)
    months = build_spend_report(spend_ledger, SpendQuery(group_by=("month",)), zones)

    assert [(r.key["day"], r.requests) for r in days.rows] == [
        ("2026-10-30", 1),
        ("2026-10-31", 1),
        ("2026-11-01", 2),
        ("2026-11-02", 1),
    ]
    assert [(r.key["month"], r.requests) for r in months.rows] == [("2026-10", 2), ("2026-11", 3)]


def test_tenants_in_different_zones_each_use_their_own(spend_ledger: SqliteLedger) -> None:
    ts = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    spend_ledger.record(spend_record("a", ts, tenant="acme"))
    spend_ledger.record(spend_record("g", ts, tenant="globex"))
    spend_ledger.record(spend_record("i", ts, tenant="initech"))  # not configured: UTC
    spend_ledger.flush()
    zones = TenantZones({"acme": "Asia/Shanghai", "globex": "UTC"})

    report = build_spend_report(spend_ledger, SpendQuery(group_by=("tenant", "day")), zones)

    assert [(r.key["tenant"], r.key["day"]) for r in report.rows] == [
        ("acme", "2026-11-27"),
        ("globex", "2026-11-26"),
        ("initech", "2026-11-26"),
    ]
    assert report.time_zone is None  # each tenant's own


def test_group_by_model_and_user_and_csv_shape(spend_ledger: SqliteLedger) -> None:
    spend_ledger.record(spend_record("1", DAY, user="alice"))
    spend_ledger.record(spend_record("2", DAY, user="alice", route="large"))
    spend_ledger.record(spend_record("3", DAY, route="cache"))
    spend_ledger.flush()

    by_user = build_spend_report(spend_ledger, SpendQuery(group_by=("user",)), UTC_ZONES)
    text = render_spend_csv(
        build_spend_report(spend_ledger, SpendQuery(group_by=("model",)), UTC_ZONES)
    )

    assert [(r.key["user"], r.requests) for r in by_user.rows] == [("", 1), ("alice", 2)]
    lines = text.splitlines()
    assert lines[0] == (
        "model,requests,errors,cache_hits,input_tokens,output_tokens,handoffs,cost_usd,"
        "large_cost_usd,savings_usd,cost_micros,large_cost_micros,savings_micros"
    )
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"", "gpt-4o", "gpt-4o-mini"}
    assert rows["gpt-4o-mini"]["cost_usd"] == "0.000450"
    assert rows["gpt-4o-mini"]["cost_micros"] == "450"
    assert rows[""]["cache_hits"] == "1" and rows[""]["cost_micros"] == "0"


def test_json_shape_has_bounds_zone_rows_total_and_a_null_budget_hook(
    spend_ledger: SqliteLedger,
) -> None:
    spend_ledger.record(spend_record("1", DAY))
    spend_ledger.flush()
    query = SpendQuery(
        tenant="acme",
        since=datetime(2026, 11, 1, tzinfo=UTC),
        until=datetime(2026, 12, 1, tzinfo=UTC),
        group_by=("day", "tier"),
    )

    doc = json.loads(render_spend_json(build_spend_report(spend_ledger, query, UTC_ZONES)))

    assert doc["object"] == "spend_report"
    assert (doc["tenant"], doc["time_zone"], doc["currency"]) == ("acme", "UTC", "USD")
    assert (doc["from"], doc["to"]) == ("2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00")
    assert doc["group_by"] == ["day", "tier"]
    assert doc["rows"] == [
        {
            "day": "2026-11-26",
            "tier": "small",
            "requests": 1,
            "errors": 0,
            "cache_hits": 0,
            "input_tokens": 1_000,
            "output_tokens": 500,
            "handoffs": 0,
            "cost_micros": 450,
            "cost_usd": "0.000450",
            "large_cost_micros": 7_500,
            "large_cost_usd": "0.007500",
            "savings_micros": 7_050,
            "savings_usd": "0.007050",
        }
    ]
    assert doc["total"]["cost_micros"] == 450 and "day" not in doc["total"]
    # Until gateway.budget answers the hook, every amount is null.
    assert doc["budget"]["month"] == {
        "period": "month",
        "limit_micros": None,
        "limit_usd": None,
        "used_micros": None,
        "used_usd": None,
        "left_micros": None,
        "left_usd": None,
    }
    assert doc["budget"]["day"]["left_micros"] is None


def test_a_budget_lookup_fills_used_and_left(spend_ledger: SqliteLedger) -> None:
    def budgets(tenant: str, now: datetime) -> list[BudgetStatus]:
        assert tenant == "acme"
        return [BudgetStatus("month", limit_micros=10_000_000, used_micros=2_500_000)]

    report = build_spend_report(
        spend_ledger, SpendQuery(tenant="acme"), UTC_ZONES, budgets=budgets, now=DAY
    )

    month = json.loads(render_spend_json(report))["budget"]["month"]
    assert (month["left_micros"], month["left_usd"]) == (7_500_000, "7.500000")


def test_a_report_over_every_tenant_has_no_budget(spend_ledger: SqliteLedger) -> None:
    doc = json.loads(render_spend_json(build_spend_report(spend_ledger, SpendQuery(), UTC_ZONES)))
    assert doc["budget"] is None
    assert doc["rows"] == [] and doc["total"]["requests"] == 0


def test_spend_table_ends_with_a_total(spend_ledger: SqliteLedger) -> None:
    spend_ledger.record(spend_record("1", DAY))
    spend_ledger.flush()
    table = render_spend_table(
        build_spend_report(spend_ledger, SpendQuery(group_by=("tier",)), UTC_ZONES)
    )
    assert table.splitlines()[-1].split() == [
        "TOTAL",
        "1",
        "0",
        "0",
        "1000",
        "500",
        "0",
        "0.000450",
        "0.007500",
        "0.007050",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("day", ("day",)), ("day, tier", ("day", "tier")), ("route,model", ("route", "model"))],
)
def test_group_by_parses_names_and_the_legacy_route(text: str, expected: tuple[str, ...]) -> None:
    assert parse_group_by(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "group_by is empty"),
        ("colour", "cannot group by 'colour'"),
        ("day,day", "twice"),
        ("day,month", "twice"),
        ("day,", "empty name"),
    ],
)
def test_a_bad_group_by_names_the_choices(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_group_by(text)
    assert "use day, month, model, tier, user" in str(info.value)


def test_from_after_to_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="is not before to"):
        SpendQuery(since=DAY + timedelta(days=1), until=DAY)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"),
        (5_000, "$0.00"),
        (15_000, "$0.02"),
        (1_234_567_890, "$1,234.57"),
        (-25_000, "-$0.02"),
    ],
)
def test_usd_for_people_rounds_half_even_to_the_cent(micros: int, text: str) -> None:
    assert format_usd_cents(micros) == text


def test_local_currency_amounts_round_half_even_to_a_ten_thousandth() -> None:
    from decimal import Decimal

    from gateway.reports import LocalCurrency

    cny = LocalCurrency("CNY", Decimal("7.1"))
    assert cny.amount(1_000_000) == "7.1000"
    assert cny.amount(920) == "0.0065"  # 0.006532
    assert cny.amount(-5) == "0.0000"  # -0.0000355 rounds to zero
    assert cny.amount(0) == "0.0000"
