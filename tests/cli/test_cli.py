"""The real ``gateway`` console script, run in subprocesses as an operator would run it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.ledger import LedgerRecord, SqliteLedger
from tests.support.mock_upstream import free_port
from tests.support.served import serving

REPO = Path(__file__).resolve().parents[2]
GATEWAY = Path(sys.executable).parent / "gateway"
KEY_PATTERN = re.compile(r"sk-sb-[A-Za-z0-9_-]{43}")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would change what the gateway does."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SWITCHBOARD_")
        and name
        not in {
            "OPENAI_API_KEY",
            "SMALL_MODEL",
            "LARGE_MODEL",
            "SMALL_BASE_URL",
            "LARGE_BASE_URL",
            "XDG_DATA_HOME",
        }
    }
    env.update(extra)
    return env


def run(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GATEWAY), *args],
        cwd=REPO,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- help ---------------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "keys", "report", "config"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage: gateway" in result.stderr


def test_python_dash_m_gateway_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: gateway")
    assert "serve" in result.stdout


# -- keys create --------------------------------------------------------------------------------


def test_keys_create_prints_a_key_and_the_config_line_with_its_hash() -> None:
    result = run("keys", "create", "--tenant", "acme")
    assert result.returncode == 0
    keys = KEY_PATTERN.findall(result.stdout)
    assert len(keys) == 1, result.stdout
    key = keys[0]
    assert re.search(rf"^\s+{re.escape(key)}$", result.stdout, re.MULTILINE)
    line = re.search(r"^\s+- sha256: ([0-9a-f]{64})\b", result.stdout, re.MULTILINE)
    assert line is not None, result.stdout
    assert line.group(1) == hashlib.sha256(key.encode()).hexdigest()
    assert "tenants.acme.keys" in result.stdout


def test_keys_create_makes_a_new_key_each_time() -> None:
    first = KEY_PATTERN.findall(run("keys", "create", "--tenant", "acme").stdout)
    second = KEY_PATTERN.findall(run("keys", "create", "--tenant", "acme").stdout)
    assert first and second and first != second


def test_keys_create_needs_a_tenant() -> None:
    result = run("keys", "create")
    assert result.returncode == 2
    assert "--tenant" in result.stderr


# -- config check -------------------------------------------------------------------------------


def test_config_check_accepts_the_shipped_default() -> None:
    result = run("config", "check", "config/gateway.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "config/gateway.yaml: ok"
    assert "small = smollm2-135m-instruct, large = gpt-4o" in result.stdout
    assert "  router: 3 rule(s) -> classifier -> default small" in result.stdout
    assert "  classifier: threshold 0.25, weights router-v1 (shipped)" in result.stdout
    assert result.stderr == ""


def test_config_check_of_a_broken_file_names_the_path_and_location(tmp_path: Path) -> None:
    text = (REPO / "config" / "gateway.yaml").read_text("utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("      route: large", "      route: lagre", 1), "utf-8")
    result = run("config", "check", str(broken))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{broken}: $.router.rules[0].route: unknown tier 'lagre'" in result.stderr


def test_config_check_names_an_unset_masking_secret_and_lists_safeguards(tmp_path: Path) -> None:
    text = (REPO / "config" / "gateway.yaml").read_text("utf-8")
    safety = (
        "    timezone: UTC\n"
        "    safety:\n"
        "      masking: { enabled: true, secret_env: TEST_MASK_SECRET }\n"
        "      handoff: { enabled: true, action: large }\n"
    )
    path = tmp_path / "safety.yaml"
    path.write_text(text.replace("    timezone: UTC\n", safety, 1), "utf-8")

    unset = run("config", "check", str(path))
    ok = run("config", "check", str(path), env={**clean_env(), "TEST_MASK_SECRET": "x" * 32})

    assert unset.returncode == 1
    assert "TEST_MASK_SECRET is not set" in unset.stderr
    assert ok.returncode == 0, ok.stderr
    assert "  safety: default (masking, handoff: large)" in ok.stdout


def test_config_check_of_a_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = run("config", "check", str(missing))
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert "cannot read" in result.stderr


# -- report -------------------------------------------------------------------------------------

DAY1 = datetime(2026, 11, 25, tzinfo=UTC)
DAY2 = datetime(2026, 11, 26, tzinfo=UTC)


@dataclass(frozen=True)
class Spend:
    tenant: str
    ts: datetime
    cost: int
    large_cost: int


SPENDS = [
    Spend("acme", DAY1.replace(hour=9), cost=1_000, large_cost=10_000),
    Spend("acme", DAY1.replace(hour=23, minute=59), cost=2_000, large_cost=20_000),
    Spend("globex", DAY1.replace(hour=12), cost=40_000, large_cost=40_000),
    Spend("acme", DAY2.replace(hour=0), cost=300_000, large_cost=3_000_000),
    Spend("globex", DAY2.replace(hour=18), cost=5_000_000, large_cost=5_000_000),
]


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("ledger-data")
    with SqliteLedger(data_dir / "ledger.sqlite3") as ledger:
        for i, spend in enumerate(SPENDS):
            ledger.record(
                LedgerRecord(
                    request_id=f"req-{i}",
                    ts=spend.ts,
                    tenant=spend.tenant,
                    requested_model="auto",
                    route="small" if spend.cost < spend.large_cost else "large",
                    model="tiny" if spend.cost < spend.large_cost else "gpt-4o",
                    prompt_tokens=100 + i,
                    completion_tokens=10,
                    cost_micros=spend.cost,
                    large_cost_micros=spend.large_cost,
                    latency_ms=12.5,
                    status=200,
                    stream=False,
                )
            )
    return data_dir


def report_json(ledger_dir: Path, *args: str) -> dict[str, object]:
    result = run("report", "--data-dir", str(ledger_dir), "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def total(doc: Mapping[str, object]) -> dict[str, object]:
    value = doc["total"]
    assert isinstance(value, dict)
    return value


def test_report_table_ends_with_the_total(ledger_dir: Path) -> None:
    result = run("report", "--data-dir", str(ledger_dir), "--format", "table")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["tenant", "route", "model", "requests"]
    assert lines[-1].startswith("TOTAL")
    # requests, errors, cache_hits, prompt, completion, handoffs, cost, large_cost, savings
    assert lines[-1].split()[1:] == [
        "5",
        "0",
        "0",
        "510",
        "50",
        "0",
        "5.343000",
        "8.070000",
        "2.727000",
    ]


def test_report_is_a_table_by_default(ledger_dir: Path) -> None:
    result = run("report", "--data-dir", str(ledger_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("TOTAL")


def test_report_csv_parses_and_its_rows_sum_to_the_ledger(ledger_dir: Path) -> None:
    result = run("report", "--data-dir", str(ledger_dir), "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {(r["tenant"], r["route"], r["model"]) for r in rows} == {
        ("acme", "small", "tiny"),
        ("globex", "large", "gpt-4o"),
    }
    assert sum(int(r["requests"]) for r in rows) == len(SPENDS)
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(sum(s.cost for s in SPENDS)) / 10**6
    assert sum(Decimal(r["savings_usd"]) for r in rows) == Decimal("2.727")
    acme = next(r for r in rows if r["tenant"] == "acme")
    assert acme["requests"] == "3"
    assert acme["cost_usd"] == "0.303000"


def test_report_json_has_rows_and_totals_in_micros(ledger_dir: Path) -> None:
    doc = report_json(ledger_dir)
    assert doc["tenant"] is None
    assert doc["group_by"] == ["tenant", "route", "model"]
    rows = doc["rows"]
    assert isinstance(rows, list) and len(rows) == 2
    assert total(doc)["requests"] == 5
    assert total(doc)["cost_micros"] == sum(s.cost for s in SPENDS)
    assert total(doc)["large_cost_micros"] == sum(s.large_cost for s in SPENDS)


def test_report_tenant_filter_keeps_only_that_tenant(ledger_dir: Path) -> None:
    doc = report_json(ledger_dir, "--tenant", "acme")
    assert doc["tenant"] == "acme"
    rows = doc["rows"]
    assert isinstance(rows, list)
    assert {row["tenant"] for row in rows} == {"acme"}
    assert total(doc)["requests"] == 3
    assert total(doc)["cost_micros"] == 303_000


def test_report_of_an_unknown_tenant_is_empty(ledger_dir: Path) -> None:
    doc = report_json(ledger_dir, "--tenant", "initech")
    assert doc["rows"] == []
    assert total(doc)["requests"] == 0


def test_report_until_includes_all_of_that_day(ledger_dir: Path) -> None:
    doc = report_json(ledger_dir, "--until", "2026-11-25")
    # Includes the acme request at 23:59 on the 25th, excludes the one at 00:00 on the 26th.
    assert total(doc)["requests"] == 3
    assert total(doc)["cost_micros"] == 43_000


def test_report_since_starts_at_midnight_of_that_day(ledger_dir: Path) -> None:
    doc = report_json(ledger_dir, "--since", "2026-11-26")
    assert total(doc)["requests"] == 2
    assert total(doc)["cost_micros"] == 5_300_000


def test_report_since_and_until_the_same_day_is_that_day(ledger_dir: Path) -> None:
    doc = report_json(
        ledger_dir, "--since", "2026-11-26", "--until", "2026-11-26", "--tenant", "acme"
    )
    assert total(doc)["requests"] == 1
    assert total(doc)["cost_micros"] == 300_000


def test_report_by_day_groups_per_utc_day(ledger_dir: Path) -> None:
    doc = report_json(ledger_dir, "--group-by", "day")
    rows = doc["rows"]
    assert isinstance(rows, list)
    assert [(r["day"], r["requests"]) for r in rows] == [("2026-11-25", 3), ("2026-11-26", 2)]


def test_report_reads_the_data_dir_from_the_environment(ledger_dir: Path) -> None:
    result = run("report", "--format", "json", env=clean_env(SWITCHBOARD_DATA_DIR=str(ledger_dir)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"]["requests"] == 5


def test_report_without_a_ledger_exits_2_naming_the_path(tmp_path: Path) -> None:
    result = run("report", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"no ledger at {tmp_path / 'ledger.sqlite3'}" in result.stderr
    assert "--data-dir" in result.stderr


def test_report_with_a_bad_date_exits_2_with_the_accepted_formats(ledger_dir: Path) -> None:
    result = run("report", "--data-dir", str(ledger_dir), "--since", "2026-13-01")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid date '2026-13-01'" in result.stderr
    assert "YYYY-MM-DD" in result.stderr


def test_report_with_a_naive_datetime_exits_2(ledger_dir: Path) -> None:
    result = run("report", "--data-dir", str(ledger_dir), "--until", "2026-11-26T10:00:00")
    assert result.returncode == 2
    assert "no UTC offset" in result.stderr


def test_report_with_an_unknown_group_exits_2(ledger_dir: Path) -> None:
    result = run("report", "--data-dir", str(ledger_dir), "--group-by", "colour")
    assert result.returncode == 2
    assert "colour" in result.stderr


# -- serve --------------------------------------------------------------------------------------




def test_serve_generates_a_key_once_and_keeps_it_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_env()

    with serving(data_dir, tmp_path / "first.log", env) as first:
        log = first.stderr()
        keys = KEY_PATTERN.findall(log)
        assert len(keys) == 1, log
        key = keys[0]
        assert "Generated an API key for tenant 'default'" in log
        assert first.models_status(key) == 200
        assert first.models_status("sk-sb-wrong") == 401
    assert key not in (data_dir / "generated-keys.json").read_text("utf-8")

    with serving(data_dir, tmp_path / "second.log", env) as second:
        log = second.stderr()
        assert "sk-sb-" not in log
        assert "Generated" not in log
        assert second.models_status(key) == 200
        assert second.models_status("sk-sb-wrong") == 401


def test_serve_with_an_api_key_set_uses_it_and_prints_none(tmp_path: Path) -> None:
    env = clean_env(SWITCHBOARD_API_KEY="sk-mine")
    with serving(tmp_path / "data", tmp_path / "serve.log", env) as served:
        assert served.models_status("sk-mine") == 200
        assert served.models_status("sk-sb-wrong") == 401
        log = served.stderr()
        assert "sk-sb-" not in log
        assert "sk-mine" not in log
    assert not (tmp_path / "data" / "generated-keys.json").exists()


def test_serve_with_a_broken_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("tiers: {}\n", "utf-8")
    result = run(
        "serve", "--config", str(broken), "--port", str(free_port()), "--data-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert f"{broken}: $." in result.stderr


def test_serve_with_a_port_out_of_range_exits_2(tmp_path: Path) -> None:
    result = run("serve", "--port", "70000", "--data-dir", str(tmp_path), timeout=10)
    assert result.returncode == 2
    assert "between 1 and 65535, got 70000" in result.stderr


def test_serve_with_a_damaged_ledger_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite3").write_bytes(b"not a database, just text" * 100)
    result = run("serve", "--port", str(free_port()), "--data-dir", str(tmp_path), timeout=10)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"cannot prepare the ledger at {tmp_path / 'ledger.sqlite3'}" in result.stderr


def test_report_of_a_damaged_ledger_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite3").write_bytes(b"not a database, just text" * 100)
    result = run("report", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"cannot prepare the ledger at {tmp_path / 'ledger.sqlite3'}" in result.stderr


def test_config_check_of_a_file_that_is_not_utf8_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("tiers: {small: {model: tiñy}}\n".encode("latin-1"))
    result = run("config", "check", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}: not UTF-8 text" in result.stderr
