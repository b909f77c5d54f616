"""The HTML report's numbers: month-end projection, burn-down against a budget, escaping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.ledger import LedgerRecord, SqliteLedger
from gateway.report_html import build_html_report, project_month
from gateway.reports import BudgetStatus
from gateway.timezones import TenantZones

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 16, tzinfo=UTC)  # half of November has passed


def rec(i: int, ts: datetime, user: str | None = None, cost: int = 1_000_000) -> LedgerRecord:
    return LedgerRecord(
        request_id=f"r{i}",
        ts=ts,
        tenant="acme",
        requested_model="auto",
        route="large",
        model="gpt-4o",
        prompt_tokens=10,
        completion_tokens=10,
        cost_micros=cost,
        large_cost_micros=cost,
        latency_ms=1.0,
        status=200,
        stream=False,
        end_user=user,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as led:
        yield led


def test_the_projection_is_the_spend_so_far_over_the_elapsed_share() -> None:
    assert project_month(3_000_000, NOV, DEC, NOW) == 6_000_000
    assert project_month(3_000_000, NOV, DEC, DEC + timedelta(days=3)) == 3_000_000
    assert project_month(3_000_000, NOV, DEC, NOV) == 3_000_000


def test_the_burn_down_shows_budget_left_and_the_projected_month_end(
    ledger: SqliteLedger,
) -> None:
    for day in range(15):
        ledger.record(rec(day, NOV + timedelta(days=day, hours=12)))  # $1 a day
    ledger.flush()

    def budgets(tenant: str, now: datetime) -> list[BudgetStatus]:
        return [BudgetStatus("month", limit_micros=40_000_000, used_micros=15_000_000)]

    page = build_html_report(ledger, "acme", None, None, TenantZones(), budgets=budgets, now=NOW)

    assert "Budget burn-down, 2026-11" in page
    assert "Budget $40.00; spent $15.00, left $25.00" in page
    assert "Projected month end: $30.00 (75% of the budget)" in page
    assert "budget left" in page


def test_without_a_budget_the_burn_down_says_so(ledger: SqliteLedger) -> None:
    ledger.record(rec(1, NOV + timedelta(days=2)))
    ledger.flush()

    page = build_html_report(ledger, "acme", None, None, TenantZones(), now=NOW)

    assert "No budget limit is known" in page
    assert "projected month end at this rate: $2.00" in page


def test_a_long_range_is_drawn_per_month(ledger: SqliteLedger) -> None:
    for day in range(0, 120, 3):
        ledger.record(rec(day, NOV - timedelta(days=day)))
    ledger.flush()

    page = build_html_report(ledger, "acme", None, None, TenantZones(), now=NOW)

    assert "Spend per month by tier" in page
    assert ">2026-08<" in page and ">2026-11<" in page


def test_an_empty_ledger_renders_a_page_that_says_so(ledger: SqliteLedger) -> None:
    page = build_html_report(ledger, None, None, None, TenantZones(), now=NOW)

    assert "Spend report: all tenants" in page
    assert "No requests in this period." in page


def test_names_from_requests_are_escaped(ledger: SqliteLedger) -> None:
    ledger.record(rec(1, NOW - timedelta(hours=1), user='"><script>alert(1)</script>'))
    ledger.flush()

    page = build_html_report(ledger, "acme", None, None, TenantZones(), now=NOW)

    assert "<script>" not in page
    assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
