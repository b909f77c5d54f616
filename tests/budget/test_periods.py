"""Calendar periods in a tenant's time zone, at fixed instants (DST, month and year ends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.budget.periods import current_period, day_period, month_period


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_shanghai_day_starts_at_16_utc_the_day_before() -> None:
    period = day_period("Asia/Shanghai", utc(2026, 11, 25, 16, 30))
    assert period.id == "2026-11-26"
    assert period.start == utc(2026, 11, 25, 16)
    assert period.end == utc(2026, 11, 26, 16)


def test_one_second_before_shanghai_midnight_is_still_the_previous_day() -> None:
    assert day_period("Asia/Shanghai", utc(2026, 11, 25, 15, 59, 59)).id == "2026-11-25"


def test_the_reset_instant_belongs_to_the_next_period() -> None:
    before = day_period("Asia/Shanghai", utc(2026, 11, 26, 15, 59, 59))
    at_reset = day_period("Asia/Shanghai", before.end)
    assert at_reset.id == "2026-11-27"
    assert at_reset.start == before.end
    assert not before.contains(before.end)


def test_a_shanghai_month_runs_from_local_first_to_local_first() -> None:
    period = month_period(ZoneInfo("Asia/Shanghai"), utc(2026, 11, 25, 16, 30))
    assert period.id == "2026-11"
    assert period.start == utc(2026, 10, 31, 16)
    assert period.end == utc(2026, 11, 30, 16)


def test_new_year_in_shanghai_happens_at_16_utc_on_new_years_eve() -> None:
    december = month_period("Asia/Shanghai", utc(2026, 12, 31, 15, 59, 59))
    january = month_period("Asia/Shanghai", utc(2026, 12, 31, 16))
    assert december.id == "2026-12"
    assert december.end == january.start == utc(2026, 12, 31, 16)
    assert january.id == "2027-01"
    assert january.end == utc(2027, 1, 31, 16)


def test_a_leap_february_has_29_days() -> None:
    period = month_period("UTC", utc(2028, 2, 29, 12))
    assert (period.id, period.end - period.start) == ("2028-02", timedelta(days=29))


def test_the_new_york_spring_forward_day_lasts_23_hours() -> None:
    period = day_period("America/New_York", utc(2026, 3, 8, 12))
    assert period.id == "2026-03-08"
    assert period.start == utc(2026, 3, 8, 5)  # EST, UTC-5
    assert period.end == utc(2026, 3, 9, 4)  # EDT, UTC-4
    assert period.end - period.start == timedelta(hours=23)


def test_the_new_york_fall_back_day_lasts_25_hours_and_keeps_its_repeated_hour() -> None:
    first_0130 = utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    second_0130 = utc(2026, 11, 1, 6, 30)  # 01:30 EST, an hour later
    period = day_period("America/New_York", first_0130)
    assert period == day_period("America/New_York", second_0130)
    assert period.id == "2026-11-01"
    assert period.start == utc(2026, 11, 1, 4)
    assert period.end == utc(2026, 11, 2, 5)
    assert period.end - period.start == timedelta(hours=25)


def test_a_new_york_month_spanning_dst_ends_at_local_midnight() -> None:
    period = month_period("America/New_York", utc(2026, 3, 15))
    assert period.start == utc(2026, 3, 1, 5)
    assert period.end == utc(2026, 4, 1, 4)


def test_a_day_whose_midnight_does_not_exist_starts_at_its_first_instant() -> None:
    # Santiago springs forward at 24:00 on 2026-09-05: the 6th begins at 01:00 local.
    zone = ZoneInfo("America/Santiago")
    period = day_period(zone, utc(2026, 9, 6, 12))
    assert period.id == "2026-09-06"
    assert period.start == utc(2026, 9, 6, 4)
    assert period.start.astimezone(zone).hour == 1
    assert period.end == utc(2026, 9, 7, 3)
    assert day_period(zone, utc(2026, 9, 6, 3, 59, 59)).id == "2026-09-05"


def test_seconds_until_reset_round_up_and_are_never_zero() -> None:
    period = day_period("Asia/Shanghai", utc(2026, 11, 26, 10))
    assert period.seconds_until_reset(utc(2026, 11, 26, 10)) == 6 * 3600
    assert period.seconds_until_reset(utc(2026, 11, 26, 15, 59, 59, 200_000)) == 1
    assert period.seconds_until_reset(period.end) == 1


def test_an_instant_in_another_zone_gives_the_same_period() -> None:
    local = datetime(2026, 11, 26, 0, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert day_period("Asia/Shanghai", local) == day_period(
        "Asia/Shanghai", utc(2026, 11, 25, 16, 30)
    )


def test_current_period_dispatches_on_kind() -> None:
    now = utc(2026, 11, 26, 12)
    assert current_period("day", "UTC", now).id == "2026-11-26"
    assert current_period("month", "UTC", now).id == "2026-11"
    with pytest.raises(ValueError, match="known: day, month"):
        current_period("week", "UTC", now)  # type: ignore[arg-type]


def test_a_naive_instant_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        day_period("UTC", datetime(2026, 11, 26))  # noqa: DTZ001
