"""The HTML spend report: one self-contained page, charts drawn as inline SVG here in Python.

No script, no CDN, no fonts to fetch: the file opens offline and prints. Every text that came
from a request (model and user names) or the config is escaped with ``html.escape``.

    spend over time by tier   stacked bars per day (or per month for ranges over 62 days)
    cost against baseline     actual cost and "everything on the large model"; the gap is savings
    budget burn-down          this month: budget left (or spend, without a limit) and the
                              projected month end, from the month's spend so far
    top models, top users     horizontal bars by cost
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape

from gateway.ledger import Ledger, SummaryRow
from gateway.reports import (
    BudgetLookup,
    BudgetStatus,
    SpendQuery,
    SpendReport,
    build_spend_report,
    format_usd_cents,
    no_budgets,
)
from gateway.timezones import TenantZones, day_start, month_start, next_month, zone

__all__ = ["MonthProjection", "build_html_report", "project_month", "render_html"]

TIER_COLOURS = {"large": "#d1495b", "small": "#00798c", "cache": "#66a182", "none": "#8d96a3"}
_OTHER_COLOUR = "#edae49"
_DAILY_LIMIT = 62  # days; spend spread over longer is drawn per month
_TOP = 10
_ONE_US = timedelta(microseconds=1)
_W, _H = 1080, 300  # chart size in px
_LEFT, _RIGHT, _TOP_PAD, _BOTTOM = 86, 16, 16, 48


@dataclass(frozen=True, slots=True)
class MonthProjection:
    """The month so far and where it is heading at the current daily rate."""

    month: str  # "2026-11"
    days: list[str]  # every local day of the month
    spent_by_day: list[int]  # micros, 0 for days without spend
    spent_micros: int
    projected_micros: int  # spent / elapsed share of the month; the actual total once it is over
    elapsed: float  # 0..1
    budget: BudgetStatus | None


def project_month(spent_micros: int, start: datetime, end: datetime, now: datetime) -> int:
    """Month-end spend at the rate so far: ``spent / elapsed share``, in whole micros."""
    if now >= end:
        return spent_micros
    elapsed_us = (now - start) // _ONE_US
    if elapsed_us <= 0:
        return spent_micros
    return spent_micros * ((end - start) // _ONE_US) // elapsed_us


def build_html_report(
    ledger: Ledger,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    zones: TenantZones,
    *,
    budgets: BudgetLookup = no_budgets,
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)

    def report(
        group_by: tuple[str, ...], start: datetime | None, end: datetime | None
    ) -> SpendReport:
        query = SpendQuery(tenant=tenant, since=start, until=end, group_by=group_by)
        return build_spend_report(ledger, query, zones, budgets=budgets, now=now)

    by_time = report(("day", "tier"), since, until)
    days_seen = sorted({date.fromisoformat(r.key["day"]) for r in by_time.rows})
    if days_seen and (days_seen[-1] - days_seen[0]).days >= _DAILY_LIMIT:
        by_time = report(("month", "tier"), since, until)
    by_model = report(("model",), since, until)
    by_user = report(("user",), since, until)

    tz = zone(by_time.time_zone or zones.default)
    reference = now if until is None else min(now, until - _ONE_US)
    month_day = reference.astimezone(tz).date()
    start, end = month_start(month_day, tz), day_start(next_month(month_day), tz)
    month = report(("day",), start, end)
    spent = {r.key["day"]: r.cost_micros for r in month.rows}
    days = []
    day = month_day.replace(day=1)
    while day < next_month(month_day):
        days.append(day.isoformat())
        day += timedelta(days=1)
    elapsed = min(1.0, max(0.0, (now - start) / (end - start)))
    month_budget = next((b for b in month.budget or () if b.period == "month"), None)
    projection = MonthProjection(
        month=month_day.isoformat()[:7],
        days=days,
        spent_by_day=[spent.get(d, 0) for d in days],
        spent_micros=month.total.cost_micros,
        projected_micros=project_month(month.total.cost_micros, start, end, now),
        elapsed=elapsed,
        budget=month_budget,
    )
    return render_html(by_time, by_model, by_user, projection, now=now)


# -- rendering -----------------------------------------------------------------------------------


def _cache_layers(report: SpendReport) -> str:
    """Which layers answered without a model (raw records): "3 exact, 12 approved, 5 semantic"."""
    layers = report.cache_layers
    if layers is None:
        return "cost nothing"
    names = {"exact": "exact", "answers": "approved", "semantic": "semantic"}
    counts = ", ".join(f"{c.requests:,} {names.get(c.layer, c.layer)}" for c in layers.layers)
    return f"{counts}; cost nothing"


def render_html(
    by_time: SpendReport,
    by_model: SpendReport,
    by_user: SpendReport,
    month: MonthProjection,
    *,
    now: datetime,
) -> str:
    query = by_time.query
    total = by_time.total
    period = by_time.query.group_by[0]
    who = f"tenant {query.tenant}" if query.tenant else "all tenants"
    span = f"{_bound(query.since, 'the first record')} to {_bound(query.until, 'now')}"
    zone_note = by_time.time_zone or "each tenant's own time zone"
    saved_share = (
        f"{total.savings_micros * 100 / total.large_cost_micros:.1f}% of the baseline"
        if total.large_cost_micros
        else ""
    )
    periods = _every_period(sorted({r.key[period] for r in by_time.rows}))
    tiers = sorted({r.key["tier"] for r in by_time.rows}, key=_tier_order)
    cost = {(r.key[period], r.key["tier"]): r.cost_micros for r in by_time.rows}
    per_period = {p: [r for r in by_time.rows if r.key[period] == p] for p in periods}
    cards = [
        ("Spend", format_usd_cents(total.cost_micros), ""),
        ("Saved vs. all on the large model", format_usd_cents(total.savings_micros), saved_share),
        ("Requests", f"{total.requests:,}", f"{total.errors:,} errors"),
        ("Cache hits", f"{total.cache_hits:,}", _cache_layers(by_time)),
        ("Handoffs", f"{total.handoffs:,}", "flagged for a person"),
        ("Tokens in", f"{total.prompt_tokens:,}", ""),
        ("Tokens out", f"{total.completion_tokens:,}", ""),
    ]
    cascade = by_time.cascade
    if cascade is not None:  # the small-first cascade ran (docs/safety.md)
        cards.append(
            (
                "Cascade",
                f"{cascade.of('kept').requests:,} kept / {cascade.of('escalated').requests:,} "
                "escalated",
                f"{cascade.escalated_share:.0%} escalated; saved "
                f"{format_usd_cents(cascade.savings_micros)}",
            )
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Spend report: {escape(who)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Spend report: {escape(who)}</h1>",
        f'<p class="meta">{escape(span)}; days in {escape(zone_note)}; amounts in USD; '
        f"generated {escape(now.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC'))}</p>",
        '<div class="cards">',
        *(
            f'<div class="card"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div><div class="label">{escape(note)}</div></div>'
            for label, value, note in cards
        ),
        "</div>",
        f"<h2>Spend per {escape(period)} by tier</h2>",
        _legend([(f"{t} (free)" if t == "cache" else t, _tier_colour(t)) for t in tiers]),
        _stacked_bars(
            [_short(p) for p in periods],
            [(t, _tier_colour(t), [cost.get((p, t), 0) for p in periods]) for t in tiers],
        ),
        f"<h2>Cost against everything on the large model, per {escape(period)}</h2>",
        _legend([("actual cost", "#00798c"), ("all on the large model", "#d1495b")]),
        _lines(
            [_short(p) for p in periods],
            [
                ("actual", "#00798c", [sum(r.cost_micros for r in per_period[p]) for p in periods]),
                (
                    "baseline",
                    "#d1495b",
                    [sum(r.large_cost_micros for r in per_period[p]) for p in periods],
                ),
            ],
        ),
        f"<h2>Budget burn-down, {escape(month.month)}</h2>",
        _burn_down(month),
        '<div class="columns"><div>',
        "<h2>Top models by cost</h2>",
        _top(by_model, "model", "(cache or none)"),
        "</div><div>",
        "<h2>Top users by cost</h2>",
        _top(by_user, "user", "(no user field)"),
        "</div></div>",
        f"<h2>Per {escape(period)}</h2>",
        _period_table(period, periods, per_period),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;
margin:24px auto;max-width:1120px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 6px}
.meta{color:#5b6775;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d8dee6;border-radius:6px;padding:8px 14px;flex:1 1 0}
.card .label{color:#5b6775;font-size:12px;min-height:14px}
.card .value{font-size:18px;font-weight:600}
.legend{display:flex;gap:16px;font-size:12px;color:#33404d}
.legend span{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
svg{display:block;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#33404d}
.columns{display:grid;grid-template-columns:1fr 1fr;gap:24px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #e5e9ef;text-align:right}
th:first-child,td:first-child{text-align:left}
.note{color:#5b6775;font-size:13px}
"""


def _every_period(seen: Sequence[str]) -> list[str]:
    """Days ("YYYY-MM-DD") or months ("YYYY-MM") from the first seen to the last, gaps included,
    so that the time axis is even and a quiet day shows as no bar rather than no day."""
    if not seen:
        return []
    if len(seen[0]) == 7:
        first, last = date.fromisoformat(seen[0] + "-01"), date.fromisoformat(seen[-1] + "-01")
        months = []
        while first <= last:
            months.append(first.isoformat()[:7])
            first = next_month(first)
        return months
    start, end = date.fromisoformat(seen[0]), date.fromisoformat(seen[-1])
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _short(period: str) -> str:
    """Axis labels: "11-26" for a day (the year is in the heading), "2026-11" for a month."""
    return period[5:] if len(period) == 10 else period


def _bound(value: datetime | None, fallback: str) -> str:
    return value.isoformat() if value is not None else fallback


def _tier_order(tier: str) -> tuple[int, str]:
    order = ["cache", "small", "large", "none"]
    return (order.index(tier) if tier in order else len(order), tier)


def _tier_colour(tier: str) -> str:
    return TIER_COLOURS.get(tier, _OTHER_COLOUR)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    cells = "".join(
        f'<div><span style="background:{colour}"></span>{escape(name)}</div>'
        for name, colour in items
    )
    return f'<div class="legend">{cells}</div>'


def _ticks(top: int) -> tuple[int, list[int]]:
    """A round axis maximum >= ``top`` (micros) and about five ticks up to it."""
    if top <= 0:
        return 1, [0, 1]
    raw = top / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    count = math.ceil(top / step)
    return step * count, [i * step for i in range(count + 1)]


def _axis_usd(micros: int, step: int) -> str:
    """Axis labels with as many decimals as the tick step needs (small test amounts too)."""
    decimals = min(6, max(2, -math.floor(math.log10(step / 1_000_000)))) if step else 2
    return f"${micros / 1_000_000:,.{decimals}f}"


def _frame(top: int) -> tuple[list[str], float, int]:
    """Gridlines and y labels; returns the elements, the plot height and the axis maximum."""
    maximum, ticks = _ticks(top)
    plot_h = _H - _TOP_PAD - _BOTTOM
    elements = []
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1
    for tick in ticks:
        y = _TOP_PAD + plot_h - plot_h * tick / maximum
        elements.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e5e9ef"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_axis_usd(tick, step))}</text>"
        )
    return elements, plot_h, maximum


def _x_labels(labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    every = max(1, math.ceil(len(labels) / 16))
    return [
        f'<text x="{x:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % every == 0
    ]


def _svg(elements: Sequence[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="{escape(title)}">' + "".join(elements) + "</svg>"
    )


def _empty(message: str) -> str:
    return f'<p class="note">{escape(message)}</p>'


def _stacked_bars(labels: Sequence[str], series: Sequence[tuple[str, str, list[int]]]) -> str:
    if not labels:
        return _empty("No requests in this period.")
    top = max(sum(values[i] for _, _, values in series) for i in range(len(labels)))
    elements, plot_h, maximum = _frame(top)
    slot = (_W - _LEFT - _RIGHT) / len(labels)
    bar = max(2.0, slot * 0.7)
    xs = [_LEFT + slot * (i + 0.5) for i in range(len(labels))]
    for i, x in enumerate(xs):
        base = _TOP_PAD + plot_h
        for name, colour, values in series:
            h = plot_h * values[i] / maximum
            if h <= 0:
                continue
            base -= h
            tip = f"{labels[i]} {name}: {format_usd_cents(values[i])}"
            elements.append(
                f'<rect x="{x - bar / 2:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(tip)}</title></rect>'
            )
    elements += _x_labels(labels, xs)
    return _svg(elements, "spend by tier")


def _lines(
    labels: Sequence[str],
    series: Sequence[tuple[str, str, list[int]]],
    *,
    dashed: Sequence[tuple[str, list[tuple[int, int]]]] = (),
    limit: int | None = None,
    title: str = "",
) -> str:
    """Lines over ``labels`` (a series may stop early: the month so far); ``dashed`` adds
    ``(colour, [(index, value), ...])`` projections and ``limit`` a horizontal budget line."""
    if not labels:
        return _empty("No requests in this period.")
    values = [v for _, _, vs in series for v in vs] + [v for _, pts in dashed for _, v in pts]
    top = max([*values, limit or 0, 0])
    elements, plot_h, maximum = _frame(top)
    slot = (_W - _LEFT - _RIGHT) / len(labels)
    xs = [_LEFT + slot * (i + 0.5) for i in range(len(labels))]

    def y(value: int) -> float:
        return _TOP_PAD + plot_h - plot_h * max(0, value) / maximum

    if limit is not None:
        elements.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'stroke="#1d2733" stroke-width="1.5" stroke-dasharray="2 3"/>'
            f'<text x="{_W - _RIGHT}" y="{y(limit) - 5:.1f}" text-anchor="end">budget</text>'
        )
    for colour, pts in dashed:
        points = " ".join(f"{xs[i]:.1f},{y(v):.1f}" for i, v in pts)
        elements.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="6 4"><title>projection</title></polyline>'
        )
    for name, colour, vs in series:
        points = " ".join(f"{xs[i]:.1f},{y(v):.1f}" for i, v in enumerate(vs))
        elements.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2.5">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if len(labels) <= _DAILY_LIMIT:
            elements += [
                f'<circle cx="{xs[i]:.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(labels[i])} {escape(name)}: "
                f"{escape(format_usd_cents(v))}</title></circle>"
                for i, v in enumerate(vs)
            ]
    elements += _x_labels(labels, xs)
    return _svg(elements, title or ", ".join(name for name, _, _ in series))


def _burn_down(month: MonthProjection) -> str:
    cumulative: list[int] = []
    running = 0
    for value in month.spent_by_day:
        running += value
        cumulative.append(running)
    # Days up to today carry actual values; the projection runs from today to the month's end.
    today = min(len(month.days) - 1, max(0, math.ceil(month.elapsed * len(month.days)) - 1))
    shown = cumulative[: today + 1]
    last = len(month.days) - 1
    limit = month.budget.limit_micros if month.budget else None
    projected = month.projected_micros
    labels = [d[8:] for d in month.days]
    if limit is not None:
        series = [("budget left", "#00798c", [limit - v for v in shown])]
        dashed = [("#00798c", [(today, limit - shown[-1]), (last, limit - projected)])]
        share = f" ({projected * 100 / limit:.0f}% of the budget)" if limit else ""
        note = (
            f"Budget {format_usd_cents(limit)}; spent {format_usd_cents(month.spent_micros)}, "
            f"left {format_usd_cents(limit - month.spent_micros)}. Projected month end: "
            f"{format_usd_cents(projected)}{share}."
        )
    else:
        series = [("spend so far", "#00798c", shown)]
        dashed = [("#00798c", [(today, shown[-1]), (last, projected)])]
        note = (
            f"Spent {format_usd_cents(month.spent_micros)} so far; projected month end at this "
            f"rate: {format_usd_cents(projected)} (dashed). No budget limit is known for this "
            "report, so the line shows spend rather than budget left."
        )
    chart = _lines(labels, series, dashed=dashed, limit=limit, title="budget burn-down")
    return chart + f'<p class="note">{escape(note)}</p>'


def _top(report: SpendReport, name: str, blank: str) -> str:
    rows = sorted(report.rows, key=lambda r: (-r.cost_micros, -r.requests, r.key[name]))[:_TOP]
    if not rows:
        return _empty("No requests in this period.")
    top = max(r.cost_micros for r in rows) or 1
    label_w, bar_w, row_h = 190, 230, 22
    height = row_h * len(rows) + 4
    elements = []
    for i, row in enumerate(rows):
        label = row.key[name] or blank
        short = label if len(label) <= 28 else label[:27] + "…"
        y = i * row_h + 2
        w = max(1.0, bar_w * row.cost_micros / top) if row.cost_micros else 0.0
        elements.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(short)}'
            f"<title>{escape(label)}</title></text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 7}" '
            f'fill="#00798c"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">'
            f"{escape(format_usd_cents(row.cost_micros))} · {row.requests:,} req</text>"
        )
    width = label_w + bar_w + 130
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="top {escape(name)}s">'
        + "".join(elements)
        + "</svg>"
    )


def _period_table(
    period: str, periods: Sequence[str], per_period: dict[str, list[SummaryRow]]
) -> str:
    head = (
        f"<tr><th>{escape(period)}</th><th>requests</th><th>cache hits</th><th>tokens in</th>"
        "<th>tokens out</th><th>cost</th><th>all-large baseline</th><th>saved</th></tr>"
    )
    lines = []
    for p in periods:
        rows = per_period[p]
        if not rows:
            continue  # a quiet day: a gap in the charts, no line in the table
        cost = sum(r.cost_micros for r in rows)
        large = sum(r.large_cost_micros for r in rows)
        cells = [
            p,
            f"{sum(r.requests for r in rows):,}",
            f"{sum(r.cache_hits for r in rows):,}",
            f"{sum(r.prompt_tokens for r in rows):,}",
            f"{sum(r.completion_tokens for r in rows):,}",
            format_usd_cents(cost),
            format_usd_cents(large),
            format_usd_cents(large - cost),
        ]
        lines.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    if not lines:
        return _empty("No requests in this period.")
    return f"<table>{head}{''.join(lines)}</table>"
