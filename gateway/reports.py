"""Finance reports from the spend ledger: summaries rendered as a text table, CSV or JSON.

Money stays integer micros until it is rendered, and is rendered with ``money.format_usd``
(six decimals, exact), never through a float.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from gateway.budget.scopes import budget_scopes
from gateway.budget.store import BudgetBackendError, BudgetStore
from gateway.ledger import Ledger, LedgerQuery, SummaryRow, TenantSet
from gateway.money import format_usd
from gateway.reports_cascade import CascadeSummary, cascade_json, cascade_lines, cascade_summary
from gateway.reports_layers import LayerSummary, layer_summary, layers_json, layers_lines
from gateway.timezones import TenantZones, constant_offset_spans, zone

if TYPE_CHECKING:
    from gateway.config import TenantConfig

log = logging.getLogger("gateway.reports")

__all__ = [
    "GROUP_BY_CHOICES",
    "BudgetLookup",
    "BudgetStatus",
    "Report",
    "SpendQuery",
    "SpendReport",
    "build_report",
    "build_spend_report",
    "format_usd_cents",
    "no_budgets",
    "parse_date_bound",
    "parse_group_by",
    "render_csv",
    "render_json",
    "render_spend_csv",
    "render_spend_json",
    "render_spend_table",
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
        handoffs=sum(r.handoffs for r in rows),
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
    body = [[row.key.get(k, "") for k in keys] + _cells(row) for row in report.rows]
    return _aligned(keys, _header(report), body, _cells(report.total))


def _aligned(
    keys: Sequence[str], header: list[str], body: list[list[str]], total_cells: list[str]
) -> str:
    # Without group columns there is nowhere to write "TOTAL", so add an unnamed label column.
    if not keys:
        header = ["", *header]
        body = [["", *line] for line in body]
    n_keys = max(1, len(keys))
    total = ["TOTAL"] + [""] * (n_keys - 1) + total_cells
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


# -- spend reports: GET /admin/reports/spend, GET /admin/reports, gateway report ----------------
#
# Unlike ``Report`` above (UTC days, raw records only, kept for GET /admin/report), a spend report
# groups days and months in each tenant's time zone and reads rolled-up days (``daily_aggregates``)
# as well as raw records, so its totals do not change when old records are pruned.

GROUP_BY_CHOICES: tuple[str, ...] = (
    "day",
    "month",
    "model",
    "tier",
    "user",
    "tenant",
    "status_class",
)
# group_by name -> ledger column; "route" is the older name of "tier", kept for `gateway report`.
_SPEND_COLUMN: dict[str, str] = {
    "day": "day",
    "month": "day",
    "model": "model",
    "tier": "route",
    "route": "route",
    "user": "end_user",
    "tenant": "tenant",
    "status_class": "status_class",
}
_SPEND_COUNTS = (
    "requests",
    "errors",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "handoffs",
)
_ONE_US = timedelta(microseconds=1)
_SCAN_SHARE = 1 / 3


def parse_group_by(text: str) -> tuple[str, ...]:
    """``"day,tier"`` -> ``("day", "tier")``; ``ValueError`` naming the choices otherwise."""
    choices = (
        "use day, month, model, tier, user, tenant or status_class, each once, comma-separated "
        "(e.g. group_by=day,tier)"
    )
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise ValueError(f"group_by is empty or has an empty name ({text!r}); {choices}")
    unknown = [n for n in names if n not in _SPEND_COLUMN]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(map(repr, unknown))}; {choices}")
    if len({_SPEND_COLUMN[n] for n in names}) != len(names):
        raise ValueError(
            f"group_by {text!r} names one thing twice (day and month, or tier and route, are "
            f"one each); {choices}"
        )
    return names


@dataclass(frozen=True, slots=True)
class SpendQuery:
    """One tenant (or all) in ``[since, until)`` (open where None), grouped by ``group_by``."""

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    group_by: tuple[str, ...] = ("day",)

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(
                f"from ({self.since.isoformat()}) is not before to ({self.until.isoformat()}); "
                "swap them, or give a from that is earlier than to"
            )


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A tenant's budget in its current calendar ``period``, in USD micros; None where unknown."""

    period: str  # "day" | "month"
    limit_micros: int | None = None
    used_micros: int | None = None

    @property
    def left_micros(self) -> int | None:
        if self.limit_micros is None or self.used_micros is None:
            return None
        return self.limit_micros - self.used_micros


# The hook for "budget used and left": given a tenant and the current instant, the budget state of
# its day and its month. gateway.budget provides the real one; until it is wired in (see
# gateway.api.reports.budget_lookup), ``no_budgets`` reports every amount as unknown (JSON null).
BudgetLookup = Callable[[str, datetime], Sequence[BudgetStatus]]


def no_budgets(tenant: str, now: datetime) -> tuple[BudgetStatus, ...]:
    """The budget hook before the budget package answers: day and month, amounts unknown."""
    return (BudgetStatus("day"), BudgetStatus("month"))


async def read_budget(store: BudgetStore, tenant: str, tenant_cfg: TenantConfig) -> BudgetLookup:
    """The tenant's day and month as ``store`` counts them now, as a lookup for the builders.

    A tenant without a budget, or a store that does not answer, gives unknown amounts (JSON
    null), never an error: a report must not fail because the enforcement state is out of reach.
    """
    cfg = tenant_cfg.budget
    if cfg is None:
        return no_budgets
    scopes = budget_scopes(
        tenant,
        cfg,
        model=None,
        user=None,
        now=datetime.now(UTC),
        tenant_timezone=tenant_cfg.timezone,
    )
    day, month = scopes[0], scopes[1]  # budget_scopes puts the tenant's day and month first
    try:
        statuses = (
            BudgetStatus("day", day.limit_micros, await store.spent(day.key)),
            BudgetStatus("month", month.limit_micros, await store.spent(month.key)),
        )
    except BudgetBackendError as exc:
        log.warning(
            "budget store unavailable, report on %s shows no budget amounts: %s", tenant, exc
        )
        return no_budgets

    def lookup(asked: str, now: datetime) -> Sequence[BudgetStatus]:
        return statuses if asked == tenant else no_budgets(asked, now)

    return lookup


@dataclass(frozen=True, slots=True)
class LocalCurrency:
    """The currency a tenant's budget is in (``budget.currency``), for amounts shown beside USD.

    USD stays the unit of record (micros, exact); local amounts are USD × ``usd_rate``, rounded
    half-even to 1/10,000 of the unit, for people.
    """

    code: str
    usd_rate: Decimal

    def amount(self, micros: int) -> str:
        value = Decimal(micros) * self.usd_rate / 1_000_000
        rounded = value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
        return str(abs(rounded) if rounded == 0 else rounded)  # no "-0.0000"

    @classmethod
    def of_tenant(cls, tenant_cfg: TenantConfig | None) -> LocalCurrency | None:
        budget = tenant_cfg.budget if tenant_cfg is not None else None
        if budget is None or budget.currency == "USD":
            return None
        return cls(budget.currency, budget.rate)


@dataclass(frozen=True, slots=True)
class SpendReport:
    query: SpendQuery
    time_zone: str | None  # the zone its days follow; None when tenants differ (each their own)
    rows: list[SummaryRow]  # key: one value per group_by name
    total: SummaryRow
    budget: tuple[BudgetStatus, ...] | None  # None for a report over every tenant
    # The tenant's budget currency when it is not USD (one-tenant reports only).
    local: LocalCurrency | None = None
    # Requests answered without a model, per layer (exact, answers, semantic); None: none.
    cache_layers: LayerSummary | None = None
    # The small-first cascade's outcomes and savings; None: it never ran.
    cascade: CascadeSummary | None = None
    # Requests with a human-handoff signal, per reason (raw records; empty: none).
    handoff_reasons: Mapping[str, int] = field(default_factory=dict)


def build_spend_report(
    ledger: Ledger,
    query: SpendQuery,
    zones: TenantZones,
    *,
    budgets: BudgetLookup = no_budgets,
    now: datetime | None = None,
    local: LocalCurrency | None = None,
) -> SpendReport:
    """Sum raw records and rolled-up days per ``query.group_by``, days in each tenant's zone;
    ``local``: also show money in the tenant's budget currency."""
    columns = tuple(dict.fromkeys(_SPEND_COLUMN[g] for g in query.group_by))
    sums: dict[tuple[str, ...], list[int]] = {}
    plans = zones.groups(query.tenant)
    for zone_name, tenants in plans:
        parts = ledger.aggregated_spend(tenants, query.since, query.until, columns)
        bounds = ledger.spend_bounds(tenants)
        if bounds is not None:
            first, last = bounds[0], bounds[1] + _ONE_US
            since = first if query.since is None else max(query.since, first)
            until = last if query.until is None else min(query.until, last)
            scan = _mostly(ledger, tenants, (until - since) / (last - first))
            if since < until and "day" in columns:
                for start, end, offset in constant_offset_spans(zone(zone_name), since, until):
                    parts.extend(
                        ledger.local_spend(tenants, start, end, offset, columns, scan=scan)
                    )
            elif since < until:  # no local dates needed: one query, whatever the zone
                parts.extend(
                    ledger.local_spend(tenants, since, until, timedelta(0), columns, scan=scan)
                )
        for part in parts:
            key = tuple(_group_value(name, part.key) for name in query.group_by)
            acc = sums.setdefault(key, [0] * len(_METRICS))
            for i, value in enumerate(_metrics(part)):
                acc[i] += value
    rows = [
        _summary(dict(zip(query.group_by, key, strict=True)), sums[key]) for key in sorted(sums)
    ]
    total = _summary({}, [sum(column) for column in zip(*(_metrics(r) for r in rows), strict=True)])
    time_zone = (
        zones.name_of(query.tenant)
        if query.tenant is not None
        else plans[0][0]
        if len(plans) == 1
        else None
    )
    budget = None
    if query.tenant is not None:
        budget = tuple(budgets(query.tenant, now or datetime.now(UTC)))
    return SpendReport(
        query=query,
        time_zone=time_zone,
        rows=rows,
        total=total,
        budget=budget,
        local=local if query.tenant is not None else None,
        cache_layers=layer_summary(ledger, [t for _, t in plans], query.since, query.until),
        cascade=cascade_summary(ledger, [t for _, t in plans], query.since, query.until),
        handoff_reasons=_handoff_reasons(ledger, [t for _, t in plans], query),
    )


def _handoff_reasons(
    ledger: Ledger, tenant_sets: Sequence[TenantSet], query: SpendQuery
) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for tenants in tenant_sets:
        counts.update(ledger.handoff_reasons(tenants, query.since, query.until))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _mostly(ledger: Ledger, tenants: TenantSet, time_share: float) -> bool:
    """Will the read touch a third of the ledger or more? Then a table scan beats the indexes.

    Assumes records spread evenly over time; the tenants' share is counted (index-only, fast).
    """
    if time_share < _SCAN_SHARE:
        return False
    if tenants.only is None:
        return True
    everything = ledger.count(LedgerQuery())
    mine = sum(ledger.count(LedgerQuery(tenant=t)) for t in tenants.only)
    return everything > 0 and mine * time_share >= everything * _SCAN_SHARE


def _group_value(name: str, key: Mapping[str, str]) -> str:
    value = key[_SPEND_COLUMN[name]]
    return value[:7] if name == "month" else value


# SummaryRow's counts in its field order (after ``key``).
_METRICS = (
    "requests",
    "errors",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "cost_micros",
    "large_cost_micros",
    "handoffs",
)


def _metrics(row: SummaryRow) -> tuple[int, ...]:
    return tuple(getattr(row, name) for name in _METRICS)


def _summary(key: dict[str, str], values: Sequence[int]) -> SummaryRow:
    if not values:
        values = [0] * len(_METRICS)
    return SummaryRow(key, *values)


def _spend_money(row: SummaryRow) -> list[tuple[str, int]]:
    return [
        ("cost", row.cost_micros),
        ("large_cost", row.large_cost_micros),
        ("savings", row.savings_micros),
    ]


def _spend_counts(row: SummaryRow) -> list[int]:
    return [
        row.requests,
        row.errors,
        row.cache_hits,
        row.prompt_tokens,
        row.completion_tokens,
        row.handoffs,
    ]


def spend_row_json(
    row: SummaryRow, group_by: Sequence[str], local: LocalCurrency | None = None
) -> dict[str, Any]:
    """One row: group keys, counts, and money as exact micros plus exact USD strings (and the
    tenant's budget currency, ``<name>_local``, when it is not USD)."""
    out: dict[str, Any] = {name: row.key.get(name, "") for name in group_by}
    out.update(zip(_SPEND_COUNTS, _spend_counts(row), strict=True))
    for name, micros in _spend_money(row):
        out[f"{name}_micros"] = micros
        out[f"{name}_usd"] = format_usd(micros)
        if local is not None:
            out[f"{name}_local"] = local.amount(micros)
    return out


def _usd_or_none(micros: int | None) -> str | None:
    return None if micros is None else format_usd(micros)


def budget_json(status: BudgetStatus, local: LocalCurrency | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "period": status.period,
        "limit_micros": status.limit_micros,
        "limit_usd": _usd_or_none(status.limit_micros),
        "used_micros": status.used_micros,
        "used_usd": _usd_or_none(status.used_micros),
        "left_micros": status.left_micros,
        "left_usd": _usd_or_none(status.left_micros),
    }
    if local is not None:
        for name in ("limit", "used", "left"):
            micros = out[f"{name}_micros"]
            out[f"{name}_local"] = None if micros is None else local.amount(micros)
    return out


def render_spend_json(report: SpendReport) -> str:
    query = report.query
    doc = {
        "object": "spend_report",
        "tenant": query.tenant,
        "time_zone": report.time_zone,
        "from": query.since.isoformat() if query.since else None,
        "to": query.until.isoformat() if query.until else None,
        "group_by": list(query.group_by),
        "currency": "USD",
        "local_currency": (
            None
            if report.local is None
            else {"code": report.local.code, "usd_rate": str(report.local.usd_rate)}
        ),
        "rows": [spend_row_json(row, query.group_by, report.local) for row in report.rows],
        "total": spend_row_json(report.total, (), report.local),
        "budget": (
            None
            if report.budget is None
            else {b.period: budget_json(b, report.local) for b in report.budget}
        ),
        "cache_layers": layers_json(report.cache_layers),
        "cascade": cascade_json(report.cascade),
        "handoff_reasons": dict(report.handoff_reasons),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _spend_header(group_by: Sequence[str]) -> list[str]:
    money = [name for name, _ in _spend_money(_summary({}, []))]
    return [
        *group_by,
        *_SPEND_COUNTS,
        *(f"{m}_usd" for m in money),
        *(f"{m}_micros" for m in money),
    ]


def _spend_cells(row: SummaryRow) -> list[str]:
    money = _spend_money(row)
    return [
        *map(str, _spend_counts(row)),
        *(format_usd(micros) for _, micros in money),
        *(str(micros) for _, micros in money),
    ]


_LOCAL_MONEY = ("cost", "large_cost", "savings")


def render_spend_csv(report: SpendReport) -> str:
    """A header row and one row per group (no total row): exact USD strings and integer micros."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    group_by = report.query.group_by
    local = report.local
    extra = [] if local is None else [f"{m}_{local.code.lower()}" for m in _LOCAL_MONEY]
    writer.writerow(_spend_header(group_by) + extra)
    for row in report.rows:
        cells = [row.key.get(k, "") for k in group_by] + _spend_cells(row)
        if local is not None:
            cells += [local.amount(micros) for _, micros in _spend_money(row)]
        writer.writerow(cells)
    return out.getvalue()


def render_spend_table(report: SpendReport) -> str:
    """An aligned text table with a TOTAL line (money in USD; the micros columns left out)."""
    group_by = list(report.query.group_by)
    width = len(_SPEND_COUNTS) + 3
    header = _spend_header(group_by)[: len(group_by) + width]
    body = [
        [row.key.get(k, "") for k in group_by] + _spend_cells(row)[:width] for row in report.rows
    ]
    total = _spend_cells(report.total)[:width]
    local = report.local
    if local is not None:  # the cost in the tenant's budget currency as well
        header = [*header, f"cost_{local.code.lower()}"]
        for cells, row in zip(body, report.rows, strict=True):
            cells.append(local.amount(row.cost_micros))
        total = [*total, local.amount(report.total.cost_micros)]
    return (
        _aligned(group_by, header, body, total)
        + cascade_lines(report.cascade)
        + layers_lines(report.cache_layers)
        + _handoff_line(report.handoff_reasons)
    )


def _handoff_line(reasons: Mapping[str, int]) -> str:
    """A line under the text table; empty when no request raised a handoff."""
    if not reasons:
        return ""
    return "handoffs by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.items()) + "\n"


def format_usd_cents(micros: int) -> str:
    """For people: ``$1,234.57`` (rounded half-even to the cent); exact values stay in micros."""
    cents = (Decimal(micros) / 10_000).to_integral_value(rounding=ROUND_HALF_EVEN)
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(int(abs(cents)), 100)
    return f"{sign}${whole:,}.{frac:02d}"
