"""``gateway report`` in time zones and as HTML, ``gateway ledger export`` and ``prune``."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.ledger import LedgerRecord, SqliteLedger
from tests.cli.test_cli import clean_env, run
from tests.support.gateway_server import TEST_CONFIG, gateway_env

NOW = datetime.now(UTC)
LATE = datetime(2025, 6, 10, 23, 30, tzinfo=UTC)  # 07:30 on the 11th in Shanghai


def rec(request_id: str, ts: datetime, tenant: str = "acme", cost: int = 1_000) -> LedgerRecord:
    return LedgerRecord(
        request_id=request_id,
        ts=ts,
        tenant=tenant,
        requested_model="auto",
        route="small",
        model="tiny",
        prompt_tokens=100,
        completion_tokens=10,
        cost_micros=cost,
        large_cost_micros=cost * 10,
        latency_ms=1.0,
        status=200,
        stream=False,
        end_user="alice",
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.record(rec("late", LATE))
        ledger.record(rec("noon", LATE.replace(hour=12), cost=2_000))
        ledger.record(rec("globex", LATE, tenant="globex", cost=5_000))
        for day in range(40):
            ledger.record(rec(f"old{day}", NOW - timedelta(days=day, hours=1), cost=100 + day))
    return tmp_path


def report(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = run("report", "--data-dir", str(data_dir), "--format", "json", *args, env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def days(doc: dict[str, object]) -> list[tuple[str, int]]:
    rows = doc["rows"]
    assert isinstance(rows, list)
    return [(row["day"], row["requests"]) for row in rows]


def test_tz_puts_days_in_that_zone(data_dir: Path) -> None:
    window = ("--tenant", "acme", "--from", "2025-06-10", "--to", "2025-06-11", "--group-by", "day")

    assert days(report(data_dir, *window, "--tz", "UTC")) == [("2025-06-10", 2)]
    assert days(report(data_dir, *window, "--tz", "Asia/Shanghai")) == [
        ("2025-06-10", 1),
        ("2025-06-11", 1),
    ]


def test_the_config_gives_each_tenant_its_zone(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        TEST_CONFIG.replace(
            "  acme:\n    keys: [{ env: ACME_KEY }]\n",
            "  acme:\n    keys: [{ env: ACME_KEY }]\n    timezone: Asia/Shanghai\n",
        ),
        encoding="utf-8",
    )
    env = clean_env(**gateway_env("http://127.0.0.1:9/v1"))
    window = ("--from", "2025-06-10", "--to", "2025-06-11", "--group-by", "tenant,day")

    doc = report(data_dir, "--config", str(config), *window, env=env)

    rows = doc["rows"]
    assert isinstance(rows, list)
    assert [(r["tenant"], r["day"]) for r in rows] == [
        ("acme", "2025-06-10"),
        ("acme", "2025-06-11"),
        ("globex", "2025-06-10"),
    ]


def test_an_unknown_zone_exits_2_naming_the_fix(data_dir: Path) -> None:
    result = run("report", "--data-dir", str(data_dir), "--tz", "Mars/Base")
    assert result.returncode == 2
    assert "unknown time zone 'Mars/Base'" in result.stderr


def test_from_after_to_exits_2(data_dir: Path) -> None:
    result = run(
        "report", "--data-dir", str(data_dir), "--from", "2026-11-27", "--to", "2026-11-01"
    )
    assert result.returncode == 2
    assert "is not before to" in result.stderr


def test_html_writes_a_self_contained_page(data_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()

    result = run(
        "report",
        "--data-dir",
        str(data_dir),
        "--tenant",
        "acme",
        "--tz",
        "UTC",
        "--html",
        str(page),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert str(page) in result.stderr
    html = page.read_text("utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") >= 4
    assert "<script" not in html and "<link" not in html


def test_export_writes_csv_and_jsonl(data_dir: Path, tmp_path: Path) -> None:
    args = ("ledger", "export", "--data-dir", str(data_dir), "--tenant", "acme", "--tz", "UTC")
    window = ("--from", "2025-06-10", "--to", "2025-06-10")

    as_csv = run(*args, *window)
    out = tmp_path / "acme.jsonl"
    as_jsonl = run(*args, "--format", "jsonl", "--output", str(out))

    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["request_id"] for r in rows] == ["noon", "late"]
    assert rows[0]["cost_usd"] == "0.002000"
    assert as_jsonl.returncode == 0, as_jsonl.stderr
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert len(lines) == 42 and {line["tenant"] for line in lines} == {"acme"}
    assert "exported 42 records" in as_jsonl.stderr


def test_prune_keeps_every_report_total(data_dir: Path) -> None:
    views = [("--group-by", g) for g in ("day", "month", "tenant,tier", "user")]
    before = [report(data_dir, "--tz", "Asia/Shanghai", *v) for v in views]

    result = run(
        "ledger", "prune", "--data-dir", str(data_dir), "--keep-days", "7", "--tz", "Asia/Shanghai"
    )

    assert result.returncode == 0, result.stderr
    assert "acme (Asia/Shanghai):" in result.stdout and "rolled up" in result.stdout
    assert [report(data_dir, "--tz", "Asia/Shanghai", *v) for v in views] == before
    again = run("ledger", "prune", "--data-dir", str(data_dir), "--keep-days", "7", "--tz", "UTC")
    assert again.returncode == 0 and "nothing to prune" in again.stdout


def test_prune_refuses_to_keep_less_than_a_day(data_dir: Path) -> None:
    result = run("ledger", "prune", "--data-dir", str(data_dir), "--keep-days", "0")
    assert result.returncode == 2
    assert "--keep-days 1 or more" in result.stderr
