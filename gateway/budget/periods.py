"""Calendar days and months in a tenant's time zone: a stable id and the instant it resets.

A period is computed from local calendar dates, never by adding 24 hours or 30 days: a day in a
zone with daylight saving time lasts 23 or 25 hours on the switch-over dates, and a month has
28 to 31 days. Each boundary is the first instant of a local date, found with ``zoneinfo``; where
local midnight does not exist (a zone that springs forward at 00:00) that is 01:00, and where it
occurs twice, the first of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = ["Period", "PeriodKind", "current_period", "day_period", "month_period"]

PeriodKind = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class Period:
    """One calendar period: ``id`` is ``2026-11-26`` (day) or ``2026-11`` (month).

    ``start`` and ``end`` are aware UTC instants; the period is ``[start, end)`` and ``end`` is
    when its limits reset (the ``retry-after`` of a request refused for the period's budget).
    """

    kind: PeriodKind
    id: str
    start: datetime
    end: datetime

    def contains(self, instant: datetime) -> bool:
        return self.start <= _aware(instant) < self.end

    def seconds_until_reset(self, now: datetime) -> int:
        """Whole seconds from ``now`` until ``end``, rounded up (at least 1), for retry-after."""
        remaining = (self.end - _aware(now)).total_seconds()
        return max(1, math.ceil(remaining))


def _aware(instant: datetime) -> datetime:
    if instant.utcoffset() is None:
        raise ValueError(
            f"instants must be timezone-aware (e.g. datetime.now(UTC)), got naive "
            f"{instant.isoformat()}"
        )
    return instant


def _start_of(day: date, zone: tzinfo) -> datetime:
    # fold=0 maps a skipped midnight to the offset before the gap, which lands on the first
    # instant that exists (01:00), and a repeated midnight to its first occurrence.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _zone(zone: tzinfo | str) -> tzinfo:
    return ZoneInfo(zone) if isinstance(zone, str) else zone


# The last period computed per (kind, zone): every request of a limited tenant needs its day and
# month, and they change once a day; a check of two instants is cheaper than zoneinfo arithmetic.
_recent: dict[tuple[PeriodKind, tzinfo | str], Period] = {}


def _recent_period(kind: PeriodKind, zone: tzinfo | str, now: datetime) -> Period | None:
    period = _recent.get((kind, zone))
    if period is not None and period.start <= _aware(now) < period.end:
        return period
    return None


def day_period(zone: tzinfo | str, now: datetime) -> Period:
    """The local calendar day containing ``now`` in ``zone`` (an IANA name or a tzinfo)."""
    recent = _recent_period("day", zone, now)
    if recent is not None:
        return recent
    tz = _zone(zone)
    today = _aware(now).astimezone(tz).date()
    period = _recent[("day", zone)] = Period(
        kind="day",
        id=today.isoformat(),
        start=_start_of(today, tz),
        end=_start_of(today + timedelta(days=1), tz),
    )
    return period


def month_period(zone: tzinfo | str, now: datetime) -> Period:
    """The local calendar month containing ``now`` in ``zone``."""
    recent = _recent_period("month", zone, now)
    if recent is not None:
        return recent
    tz = _zone(zone)
    today = _aware(now).astimezone(tz).date()
    first = today.replace(day=1)
    following = (
        date(first.year + 1, 1, 1) if first.month == 12 else first.replace(month=first.month + 1)
    )
    period = _recent[("month", zone)] = Period(
        kind="month",
        id=f"{first.year:04d}-{first.month:02d}",
        start=_start_of(first, tz),
        end=_start_of(following, tz),
    )
    return period


def current_period(kind: PeriodKind, zone: tzinfo | str, now: datetime) -> Period:
    """The ``kind`` period containing ``now``; ``ValueError`` for naive ``now`` or bad ``kind``."""
    if kind == "day":
        return day_period(zone, now)
    if kind == "month":
        return month_period(zone, now)
    raise ValueError(f"unknown period kind {kind!r}; known: day, month")
