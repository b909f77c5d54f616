"""What a test reads back after a fault: ledger rows and budget counters, straight from disk."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Row:
    request_id: str
    tenant: str
    status: int
    cost_micros: int
    stream: bool


def ledger_rows(data_dir: Path) -> list[Row]:
    """Every record committed to ``data_dir``'s ledger (read by a separate connection)."""
    conn = sqlite3.connect(data_dir / "ledger.sqlite3")
    try:
        rows = conn.execute(
            "SELECT request_id, tenant, status, cost_micros, stream FROM requests ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [Row(r[0], r[1], int(r[2]), int(r[3]), bool(r[4])) for r in rows]


def day_scope(tenant: str) -> str:
    """The budget counter of ``tenant``'s current day (the test configs use UTC)."""
    return f"t/{tenant}/day/{datetime.now(UTC).date().isoformat()}"


def sqlite_settled(data_dir: Path, scope_key: str) -> tuple[int, int]:
    """(settled, reserved) of one counter in the embedded budget store."""
    conn = sqlite3.connect(data_dir / "budget.sqlite3")
    try:
        row = conn.execute(
            "SELECT settled, reserved FROM budget_counters WHERE key = ?", (scope_key,)
        ).fetchone()
    finally:
        conn.close()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))
