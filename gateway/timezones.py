"""Report days and months in each tenant's time zone: bounds, day starts and DST-safe spans.

A record belongs to the local date of its instant in its tenant's zone. SQLite knows no time
zones, so a range is cut where the zone's UTC offset changes (``constant_offset_spans``); within
each span ``ts + offset`` gives every record's local date exactly, in one indexed query per span.
A zone without daylight saving time (UTC, Asia/Shanghai) is one span however long the range.

Local midnight that does not exist (a zone that springs forward at 00:00) starts the day at the
first instant that does; a repeated midnight starts it at the first of the two.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.ledger import LocalDay, TenantSet

__all__ = [
    "TenantZones",
    "constant_offset_spans",
    "day_start",
    "local_days",
    "month_start",
    "parse_bound",
    "zone",
    "zones_for",
]

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ONE_US = timedelta(microseconds=1)


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` naming the fix if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC', 'Asia/Shanghai' or "
            "'America/New_York'"
        ) from None


@dataclass(frozen=True, slots=True)
class TenantZones:
    """Each tenant's IANA zone (config: ``tenants.<name>.timezone``); others use ``default``."""

    by_tenant: Mapping[str, str] = field(default_factory=dict)
    default: str = "UTC"

    def __post_init__(self) -> None:
        for name in {self.default, *self.by_tenant.values()}:
            zone(name)

    @classmethod
    def of_config(cls, tenants: Mapping[str, object]) -> TenantZones:
        # getattr: the field arrives with the budgets work; until then every tenant is on UTC.
        return cls({name: str(getattr(t, "timezone", "UTC")) for name, t in tenants.items()})

    @classmethod
    def everyone_in(cls, name: str) -> TenantZones:
        """Every tenant in one zone (``--tz``)."""
        return cls({}, default=name)

    def name_of(self, tenant: str) -> str:
        return self.by_tenant.get(tenant, self.default)

    def groups(self, tenant: str | None) -> list[tuple[str, TenantSet]]:
        """The tenants to read, split by zone: one query plan per zone."""
        if tenant is not None:
            return [(self.name_of(tenant), TenantSet(only=(tenant,)))]
        others = sorted({z for z in self.by_tenant.values() if z != self.default})
        if not others:
            return [(self.default, TenantSet())]  # one zone for all: no tenant filter at all
        plans = [
            (z, TenantSet(only=tuple(sorted(t for t, tz in self.by_tenant.items() if tz == z))))
            for z in others
        ]
        moved = tuple(sorted(t for t, tz in self.by_tenant.items() if tz != self.default))
        return [(self.default, TenantSet(excluding=moved)), *plans]


def zones_for(
    tz: str | None, config: str | None, env: Mapping[str, str] | None = None
) -> TenantZones:
    """Tenants' zones for the CLI: ``tz`` for all, else the config (as ``serve`` finds it: the
    flag, $SWITCHBOARD_CONFIG, config/gateway.yaml), else UTC when there is no config at all."""
    from gateway.config import ConfigError, load_config
    from gateway.settings import DEFAULT_CONFIG

    if tz:
        return TenantZones.everyone_in(tz)
    explicit = config or (os.environ if env is None else env).get("SWITCHBOARD_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG
    if not explicit and not path.exists():
        return TenantZones()
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        raise ValueError(
            f"{exc} (the config gives each tenant's time zone; pass --tz ZONE to go without it)"
        ) from exc
    return TenantZones.of_config(loaded.config.tenants)


def day_start(day: date, tz: tzinfo) -> datetime:
    """The first instant of local ``day`` in ``tz``, as an aware UTC datetime."""
    # fold=0 maps a skipped midnight to the offset before the gap, i.e. the first instant after
    # it, and a repeated midnight to its first occurrence.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def month_start(day: date, tz: tzinfo) -> datetime:
    return day_start(day.replace(day=1), tz)


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def local_days(first: date, stop: date, tz: ZoneInfo) -> Iterator[LocalDay]:
    """The local days ``first`` .. ``stop`` (exclusive) in ``tz`` with their UTC bounds."""
    day = first
    start = day_start(day, tz)
    while day < stop:
        following = day + timedelta(days=1)
        end = day_start(following, tz)
        yield LocalDay(day=day.isoformat(), time_zone=tz.key, start=start, end=end)
        day, start = following, end


def constant_offset_spans(
    tz: tzinfo, since: datetime, until: datetime
) -> list[tuple[datetime, datetime, timedelta]]:
    """Cut ``[since, until)`` where ``tz``'s UTC offset changes: ``(start, end, offset)`` each.

    Steps a day at a time and bisects each change to the microsecond, so a decade costs a few
    thousand ``utcoffset`` calls; zones change offset at most a few times a year.
    """
    spans: list[tuple[datetime, datetime, timedelta]] = []
    start = since
    offset = _offset(tz, start)
    probe = start
    while probe < until:
        step = min(probe + timedelta(days=1), until)
        if _offset(tz, step) == offset:
            probe = step
            continue
        # The change lies in (probe, step]: bisect for the first instant with the new offset.
        lo, hi = probe, step
        while hi - lo > _ONE_US:
            mid = lo + (hi - lo) // 2
            if _offset(tz, mid) == offset:
                lo = mid
            else:
                hi = mid
        spans.append((start, hi, offset))
        start, offset, probe = hi, _offset(tz, hi), hi
    spans.append((start, until, offset))
    return [s for s in spans if s[0] < s[1]]


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    value = instant.astimezone(tz).utcoffset()
    assert value is not None  # astimezone into a ZoneInfo always yields an aware datetime
    return value


def parse_bound(text: str, tz: tzinfo, *, end: bool = False, param: str = "from") -> datetime:
    """A ``from`` / ``to`` value as an aware instant.

    ``YYYY-MM-DD`` is a local day in ``tz``: its first instant, or with ``end=True`` the first
    instant of the next day, so ``to=2026-11-26`` includes all of the 26th. An ISO 8601 datetime
    must carry an offset (``+08:00`` or ``Z``) and is the exact instant.
    """
    value = text.strip()
    accepted = (
        "use YYYY-MM-DD (a day in the tenant's time zone) or an ISO 8601 datetime with an "
        "offset, e.g. 2026-11-26 or 2026-11-26T09:30:00+08:00"
    )
    if _DATE_ONLY.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"invalid date {text!r} for {param} ({exc}); {accepted}") from None
        return day_start(day + timedelta(days=1) if end else day, tz)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid date {text!r} for {param}; {accepted}") from None
    if parsed.utcoffset() is None:
        raise ValueError(
            f"date {text!r} for {param} has no UTC offset, so its instant is unclear; {accepted}"
        )
    return parsed.astimezone(UTC)
