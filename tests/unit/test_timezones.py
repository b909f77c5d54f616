"""Local days in tenants' time zones: spans of constant offset, day starts, from/to bounds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.ledger import TenantSet
from gateway.timezones import (
    TenantZones,
    constant_offset_spans,
    day_start,
    local_days,
    parse_bound,
    zone,
)

NEW_YORK = zone("America/New_York")
SHANGHAI = zone("Asia/Shanghai")


def test_a_zone_without_dst_is_one_span_for_years() -> None:
    since, until = datetime(2020, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert constant_offset_spans(SHANGHAI, since, until) == [(since, until, timedelta(hours=8))]


def test_new_york_splits_exactly_at_its_two_switches() -> None:
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    spring = datetime(2026, 3, 8, 7, tzinfo=UTC)  # 02:00 EST -> 03:00 EDT
    autumn = datetime(2026, 11, 1, 6, tzinfo=UTC)  # 02:00 EDT -> 01:00 EST

    assert constant_offset_spans(NEW_YORK, since, until) == [
        (since, spring, timedelta(hours=-5)),
        (spring, autumn, timedelta(hours=-4)),
        (autumn, until, timedelta(hours=-5)),
    ]


def test_a_25_hour_day_starts_and_ends_at_local_midnights() -> None:
    [day] = list(local_days(date(2026, 11, 1), date(2026, 11, 2), NEW_YORK))
    assert (day.day, day.time_zone) == ("2026-11-01", "America/New_York")
    assert day.start == datetime(2026, 11, 1, 4, tzinfo=UTC)
    assert day.end - day.start == timedelta(hours=25)


def test_a_day_start_is_local_midnight_in_utc() -> None:
    assert day_start(date(2026, 11, 27), SHANGHAI) == datetime(2026, 11, 26, 16, tzinfo=UTC)


def test_a_to_date_includes_that_whole_local_day() -> None:
    assert parse_bound("2026-11-26", NEW_YORK, end=True) == datetime(2026, 11, 27, 5, tzinfo=UTC)


def test_an_iso_instant_with_an_offset_is_exact() -> None:
    expected = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)
    assert parse_bound("2026-11-26T09:30:00+08:00", NEW_YORK, end=True) == expected
    assert parse_bound("2026-11-26T01:30:00Z", SHANGHAI) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-13-01", "invalid date '2026-13-01' for to"),
        ("yesterday", "invalid date 'yesterday' for to"),
        ("26/11/2026", "invalid date"),
        ("2026-11-26T09:30:00", "has no UTC offset"),
    ],
)
def test_a_bad_bound_names_the_accepted_forms(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        parse_bound(text, UTC, param="to")
    assert "use YYYY-MM-DD" in str(info.value)


def test_an_unknown_zone_names_the_fix() -> None:
    with pytest.raises(ValueError, match="use an IANA name such as 'UTC', 'Asia/Shanghai'"):
        TenantZones({"acme": "Mars/Olympus_Mons"})


def test_tenants_in_one_zone_need_no_tenant_filter() -> None:
    assert TenantZones({"a": "UTC", "b": "UTC"}).groups(None) == [("UTC", TenantSet())]


def test_tenants_in_other_zones_are_read_apart() -> None:
    zones = TenantZones({"a": "Asia/Shanghai", "b": "UTC", "c": "Asia/Shanghai"})
    assert zones.groups(None) == [
        ("UTC", TenantSet(excluding=("a", "c"))),
        ("Asia/Shanghai", TenantSet(only=("a", "c"))),
    ]
    assert zones.groups("a") == [("Asia/Shanghai", TenantSet(only=("a",)))]
    assert zones.groups("unknown") == [("UTC", TenantSet(only=("unknown",)))]
