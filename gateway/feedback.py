"""Verdicts on answers (``POST /v1/feedback``), kept beside the ledger record they judge.

A bot (or the agent desk behind it) says an answer was good, bad, or handed to a person. The
verdict is stored in the ledger's SQLite file (table ``feedback``, migration 0005), keyed by the
request id the gateway returned in ``x-switchboard-request-id``; ``gateway train-router`` and the
answer cache read it back. A tenant can only judge its own requests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

Verdict = Literal["good", "bad", "handoff"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
COMMENT_LIMIT = 2000


class FeedbackError(Exception):
    """The feedback store cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Feedback:
    request_id: str
    tenant: str
    verdict: str
    comment: str | None
    ts: datetime


class FeedbackStore:
    """Reads and writes the ``feedback`` table of the ledger file (created by its migrations)."""

    def __init__(self, ledger_path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(ledger_path)
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            except sqlite3.Error as exc:
                raise FeedbackError(f"cannot open the ledger at {self.path}: {exc}") from exc
            self._conn = conn
        return self._conn

    def record(
        self, tenant: str, request_id: str, verdict: str, comment: str | None = None
    ) -> bool:
        """Store a verdict; False when ``tenant`` has no request with that id (nothing stored).

        Blocking (SQLite): call it off the event loop.
        """
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
        ts_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        with self._lock:
            conn = self._connection()
            try:
                # One statement: the ownership check and the write cannot be separated.
                cur = conn.execute(
                    """
                    INSERT INTO feedback (request_id, tenant, verdict, comment, ts_us)
                    SELECT ?, ?, ?, ?, ?
                    WHERE EXISTS (SELECT 1 FROM requests WHERE request_id = ? AND tenant = ?)
                    ON CONFLICT (request_id) DO UPDATE SET
                        verdict = excluded.verdict, comment = excluded.comment,
                        ts_us = excluded.ts_us
                    """,
                    (request_id, tenant, verdict, comment, ts_us, request_id, tenant),
                )
            except sqlite3.Error as exc:
                raise FeedbackError(f"cannot store feedback in {self.path}: {exc}") from exc
            return cur.rowcount > 0

    def for_tenant(self, tenant: str | None = None) -> Iterator[Feedback]:
        """Every stored verdict (of one tenant, or all), oldest first."""
        sql = "SELECT request_id, tenant, verdict, comment, ts_us FROM feedback"
        params: tuple[str, ...] = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params = (tenant,)
        with self._lock:
            try:
                rows = self._connection().execute(sql + " ORDER BY ts_us", params).fetchall()
            except sqlite3.Error as exc:
                raise FeedbackError(f"cannot read feedback from {self.path}: {exc}") from exc
        for request_id, tenant_name, verdict, comment, ts_us in rows:
            yield Feedback(
                request_id=request_id,
                tenant=tenant_name,
                verdict=verdict,
                comment=comment,
                ts=datetime.fromtimestamp(ts_us / 1_000_000, UTC),
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
