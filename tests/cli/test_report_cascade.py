"""``gateway report`` shows the cascade's outcomes and savings (JSON and the text table)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.ledger import LedgerQuery, SqliteLedger
from tests.cli.test_cli import run
from tests.cli.test_report_cli import rec

DAY = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)


def test_report_counts_the_cascade_and_its_savings(tmp_path: Path) -> None:
    # Kept: small cost 1,000 against a large price of 10,000. Escalated: the large answer's
    # 20,000 plus the discarded small call's 500, against the large price of 20,000.
    kept = [replace(rec(f"k{i}", DAY + timedelta(minutes=i)), cascade="kept") for i in range(3)]
    escalated = replace(
        rec("e1", DAY, cost=20_500),
        route="large",
        large_cost_micros=20_000,
        cascade="escalated",
    )
    unjudged = replace(rec("u1", DAY), cascade="unjudged")
    plain = rec("p1", DAY)  # no cascade: not counted
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        for record in [*kept, escalated, unjudged, plain]:
            ledger.record(record)
    window = ("--tenant", "acme", "--from", "2025-06-10", "--to", "2025-06-10")

    result = run("report", "--data-dir", str(tmp_path), "--format", "json", *window)
    table = run("report", "--data-dir", str(tmp_path), *window)

    assert result.returncode == 0, result.stderr
    cascade = json.loads(result.stdout)["cascade"]
    assert cascade["requests"] == 5
    assert cascade["escalated_share"] == 0.25
    assert cascade["outcomes"]["kept"] == {
        "requests": 3,
        "cost_micros": 3_000,
        "cost_usd": "0.003000",
        "large_cost_micros": 30_000,
        "large_cost_usd": "0.030000",
        "savings_micros": 27_000,
        "savings_usd": "0.027000",
    }
    assert cascade["outcomes"]["escalated"]["savings_micros"] == -500
    assert cascade["outcomes"]["unjudged"]["requests"] == 1
    assert cascade["savings_micros"] == 27_000 - 500 + 9_000
    assert table.returncode == 0, table.stderr
    assert (
        "cascade: 3 kept, 1 escalated, 1 unjudged (25.0% of judged answers escalated); "
        "saved 0.035500 USD against the large tier"
    ) in table.stdout


def test_without_cascaded_requests_the_report_says_null(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.record(rec("p1", DAY))

    result = run("report", "--data-dir", str(tmp_path), "--format", "json")
    table = run("report", "--data-dir", str(tmp_path))

    assert json.loads(result.stdout)["cascade"] is None
    assert "cascade:" not in table.stdout


def test_the_html_report_has_a_cascade_card(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.record(replace(rec("k1", DAY), cascade="kept"))
        ledger.record(
            replace(rec("e1", DAY, cost=20_500), large_cost_micros=20_000, cascade="escalated")
        )
    page = tmp_path / "report.html"

    result = run("report", "--data-dir", str(tmp_path), "--tz", "UTC", "--html", str(page))

    assert result.returncode == 0, result.stderr
    html = page.read_text("utf-8")
    assert '<div class="label">Cascade</div>' in html
    assert "1 kept / 1 escalated" in html and "50% escalated; saved $0.01" in html


def test_ledger_export_carries_the_cascade_outcome(tmp_path: Path) -> None:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.record(replace(rec("e1", DAY), cascade="escalated"))
        ledger.record(rec("p1", DAY + timedelta(minutes=1)))
    out = tmp_path / "export.jsonl"

    args = ("--data-dir", str(tmp_path), "--tenant", "acme", "--tz", "UTC")
    result = run("ledger", "export", *args, "--format", "jsonl", "--output", str(out))

    assert result.returncode == 0, result.stderr
    rows = {row["request_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert (rows["e1"]["cascade"], rows["p1"]["cascade"]) == ("escalated", None)


def test_prune_keeps_the_cascade_figures_of_rolled_up_days(tmp_path: Path) -> None:
    # DAY is long past (rolled up by --keep-days 7); today's records stay raw.
    today = datetime.now(UTC) - timedelta(minutes=5)
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.record(replace(rec("k1", DAY), cascade="kept"))
        ledger.record(replace(rec("k2", DAY + timedelta(hours=1)), cascade="kept"))
        ledger.record(
            replace(rec("e1", DAY, cost=20_500), large_cost_micros=20_000, cascade="escalated")
        )
        ledger.record(replace(rec("k3", today), cascade="kept"))

    def cascade(*window: str) -> object:
        result = run(
            "report", "--data-dir", str(tmp_path), "--format", "json", "--tz", "UTC", *window
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["cascade"]

    old_day = ("--from", "2025-06-10", "--to", "2025-06-10")
    before = (cascade(), cascade(*old_day))
    pruned = run("ledger", "prune", "--data-dir", str(tmp_path), "--keep-days", "7", "--tz", "UTC")

    assert pruned.returncode == 0 and "rolled up" in pruned.stdout, pruned.stderr
    assert (cascade(), cascade(*old_day)) == before
    assert before[0]["outcomes"]["kept"]["requests"] == 3  # type: ignore[index]
    assert before[1]["outcomes"]["kept"]["requests"] == 2  # type: ignore[index]
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        assert [r.request_id for r in ledger.records(LedgerQuery())] == ["k3"]  # really pruned
