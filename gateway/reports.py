"""Finance reports from the spend ledger: one summary, rendered as a text table, CSV or JSON.

Money stays integer micros until it is rendered, and is rendered with ``money.format_usd``
(six decimals, exact), never through a float.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from gateway.ledger import Ledger, LedgerQuery, SummaryRow
from gateway.money import format_usd

__all__ = [
    "Report",
    "build_report",
    "parse_date_bound",
    "render_csv",
    "render_json",
    "render_table",
]

_COUNT_COLUMNS = ("requests", "errors", "cache_hits", "prompt_tokens", "completion_tokens")
_MONEY_COLUMNS = ("cost", "large_cost", "savings")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class Report:
    query: LedgerQuery
    group_by: tuple[str, ...]
    rows: list[SummaryRow]
    total: SummaryRow  # key {}: the sums over all rows


def build_report(
    ledger: Ledger,
    query: LedgerQuery,
    group_by: Sequence[str] = ("tenant", "route", "model"),
) -> Report:
    """Summarize ``query`` per ``group_by`` and add the grand total."""
    group = tuple(group_by)
    rows = ledger.summarize(query, group)
    # Summed here rather than by a second query so the TOTAL line always equals its rows.
    total = SummaryRow(
        key={},
        requests=sum(r.requests for r in rows),
        errors=sum(r.errors for r in rows),
        cache_hits=sum(r.cache_hits for r in rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        cost_micros=sum(r.cost_micros for r in rows),
        large_cost_micros=sum(r.large_cost_micros for r in rows),
    )
    return Report(query=query, group_by=group, rows=rows, total=total)


def _money(row: SummaryRow) -> dict[str, int]:
    return {
        "cost": row.cost_micros,
        "large_cost": row.large_cost_micros,
        "savings": row.savings_micros,
    }


def _header(report: Report) -> list[str]:
    return [
        *report.group_by,
        *_COUNT_COLUMNS,
        *(f"{name}_usd" for name in _MONEY_COLUMNS),
    ]


def _cells(row: SummaryRow) -> list[str]:
    """The metric cells of one row as text, in header order (without group keys)."""
    money = _money(row)
    return [
        *(str(getattr(row, name)) for name in _COUNT_COLUMNS),
        *(format_usd(money[name]) for name in _MONEY_COLUMNS),
    ]


def render_table(report: Report) -> str:
    """An aligned text table: one line per group, then a TOTAL line."""
    keys = list(report.group_by)
    # Without group columns there is nowhere to write "TOTAL", so add an unnamed label column.
    label_only = not keys
    header = ([""] if label_only else []) + _header(report)
    body = [
        ([""] if label_only else [row.key.get(k, "") for k in keys]) + _cells(row)
        for row in report.rows
    ]
    n_keys = 1 if label_only else len(keys)
    total = ["TOTAL"] + [""] * (n_keys - 1) + _cells(report.total)
    widths = [max(len(line[i]) for line in [header, *body, total]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Group keys read left to right; numbers align on the right so digits line up.
        parts = [
            cell.ljust(w) if i < n_keys else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body), rule, line(total)]) + "\n"


def render_csv(report: Report) -> str:
    """CSV with a header row and one row per group (no TOTAL); money as exact USD decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_header(report))
    for row in report.rows:
        writer.writerow([row.key.get(k, "") for k in report.group_by] + _cells(row))
    return out.getvalue()


def _json_row(row: SummaryRow, group_by: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: row.key.get(k, "") for k in group_by}
    for name in _COUNT_COLUMNS:
        out[name] = getattr(row, name)
    for name, micros in _money(row).items():
        out[f"{name}_micros"] = micros
        out[f"{name}_usd"] = format_usd(micros)
    return out


def render_json(report: Report) -> str:
    """JSON with the query, the rows and the total; money both as int micros and USD strings."""
    query = report.query
    doc = {
        "since": query.since.isoformat() if query.since else None,
        "until": query.until.isoformat() if query.until else None,
        "tenant": query.tenant,
        "group_by": list(report.group_by),
        "rows": [_json_row(row, report.group_by) for row in report.rows],
        "total": _json_row(report.total, ()),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def parse_date_bound(text: str, *, end: bool = False) -> datetime:
    """Parse a ``--since`` / ``--until`` value into an aware datetime.

    ``YYYY-MM-DD`` is a UTC day: its midnight, or with ``end=True`` the next midnight, so an
    exclusive ``until`` of ``2026-11-26`` still includes all of the 26th. An ISO 8601 datetime
    must carry an offset (``+08:00`` or ``Z``) and is taken as the exact instant.
    """
    value = text.strip()
    accepted = (
        "expected YYYY-MM-DD (a UTC day) or an ISO 8601 datetime with an offset, "
        "e.g. 2026-11-26T09:30:00+08:00 or 2026-11-26T01:30:00Z"
    )
    if _DATE_ONLY.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"invalid date {text!r} ({exc}): {accepted}") from exc
        start = datetime.combine(day, time(), tzinfo=UTC)
        return start + timedelta(days=1) if end else start
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"invalid date {text!r}: {accepted}") from exc
    if parsed.utcoffset() is None:
        raise ValueError(
            f"date {text!r} has no UTC offset, so its instant is ambiguous: {accepted}"
        )
    return parsed
