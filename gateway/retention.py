"""Retention: export raw ledger records, then roll old ones up into daily aggregates for good.

``prune`` keeps the raw records of each tenant's last ``keep_days`` local days (plus today) and
moves every older day into ``daily_aggregates`` (one transaction per day: sums written, raw
records deleted), so spend reports give the same totals before and after. ``export`` writes a
tenant's raw records for a period as CSV or JSONL first, for whoever needs them per request.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from gateway.ledger import Ledger, LedgerQuery, LedgerRecord, TenantSet
from gateway.money import format_usd
from gateway.timezones import TenantZones, local_days, zone

__all__ = ["EXPORT_FIELDS", "Pruned", "export", "prune"]

# Everything finance needs per request; not the request text nor the routing features.
EXPORT_FIELDS: tuple[str, ...] = (
    "request_id",
    "ts",
    "tenant",
    "requested_model",
    "route",
    "model",
    "end_user",
    "status",
    "error_code",
    "stream",
    "cache_hit",
    "usage_estimated",
    "prompt_tokens",
    "completion_tokens",
    "cost_micros",
    "cost_usd",
    "large_cost_micros",
    "large_cost_usd",
    "savings_micros",
    "latency_ms",
    "handoff",
    "cache_layer",
    "intent",
    "cascade",
)


@dataclass(frozen=True, slots=True)
class Pruned:
    """What ``prune`` did for one tenant: days before ``kept_from`` rolled up, records moved."""

    tenant: str
    time_zone: str
    kept_from: str  # the first local day whose raw records are kept
    days: int
    records: int


def prune(ledger: Ledger, *, keep_days: int, zones: TenantZones, now: datetime) -> list[Pruned]:
    """Roll up every local day older than ``keep_days`` days, per tenant, in its time zone."""
    if keep_days < 1:
        raise ValueError(
            f"keep_days must be at least 1 (got {keep_days}): today and yesterday may still get "
            "records; pass --keep-days 1 or more"
        )
    done: list[Pruned] = []
    for tenant in ledger.tenants():
        tz = zone(zones.name_of(tenant))
        kept_from = now.astimezone(tz).date() - timedelta(days=keep_days)
        bounds = ledger.spend_bounds(TenantSet(only=(tenant,)))
        if bounds is None:
            continue
        first = bounds[0].astimezone(tz).date()
        if first >= kept_from:
            continue
        days = list(local_days(first, kept_from, tz))
        moved = ledger.roll_up(tenant, days)
        done.append(Pruned(tenant, tz.key, kept_from.isoformat(), len(days), moved))
    return done


def _fields(rec: LedgerRecord) -> dict[str, Any]:
    return {
        "request_id": rec.request_id,
        "ts": rec.ts.isoformat(),
        "tenant": rec.tenant,
        "requested_model": rec.requested_model,
        "route": rec.route,
        "model": rec.model,
        "end_user": rec.end_user,
        "status": rec.status,
        "error_code": rec.error_code,
        "stream": rec.stream,
        "cache_hit": rec.cache_hit,
        "usage_estimated": rec.usage_estimated,
        "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens,
        "cost_micros": rec.cost_micros,
        "cost_usd": format_usd(rec.cost_micros),
        "large_cost_micros": rec.large_cost_micros,
        "large_cost_usd": format_usd(rec.large_cost_micros),
        "savings_micros": rec.savings_micros,
        "latency_ms": rec.latency_ms,
        "handoff": rec.handoff,
        "cache_layer": rec.cache_layer,
        "intent": rec.intent,
        "cascade": rec.cascade,
    }


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def export(ledger: Ledger, query: LedgerQuery, fmt: str, out: TextIO) -> int:
    """Write the raw records of ``query`` as ``csv`` (with a header) or ``jsonl``; returns count."""
    writers: dict[str, Callable[[Iterable[LedgerRecord], TextIO], int]] = {
        "csv": _write_csv,
        "jsonl": _write_jsonl,
    }
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; use csv or jsonl")
    return writers[fmt](ledger.records(query), out)


def _write_csv(records: Iterable[LedgerRecord], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    n = 0
    for rec in records:
        fields = _fields(rec)
        writer.writerow([_csv_cell(fields[name]) for name in EXPORT_FIELDS])
        n += 1
    return n


def _write_jsonl(records: Iterable[LedgerRecord], out: TextIO) -> int:
    n = 0
    for rec in records:
        out.write(json.dumps(_fields(rec), ensure_ascii=False) + "\n")
        n += 1
    return n
