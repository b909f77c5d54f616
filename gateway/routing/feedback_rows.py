"""Training rows from a tenant's own feedback, for ``gateway train-router --feedback-tenant``.

A verdict judges one answer from one tier; a training row needs both tiers' outcomes. The mapping
below fills the side that was not seen with the assumption the router acts on:

    answered by   verdict          weak_correct  strong_correct   meaning for the router
    small         good             1             1                small was enough
    small         bad / handoff    0             1                should have gone to large
    large         bad / handoff    0             0                neither tier helps (no push)
    large         good             (left out: says nothing about what small would have done)

Only requests whose text the ledger kept (``tenants.<name>.store_request_text: true``) can be
used; the others are counted so the command can say how many were left out and why.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class FeedbackRows:
    rows: list[dict[str, Any]] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)


_LABELS: dict[tuple[str, str], tuple[int, int]] = {
    ("small", "good"): (1, 1),
    ("small", "bad"): (0, 1),
    ("small", "handoff"): (0, 1),
    ("large", "bad"): (0, 0),
    ("large", "handoff"): (0, 0),
}


def feedback_rows(ledger_path: Path, tenant: str) -> FeedbackRows:
    """Rows ``{"prompt", "weak_correct", "strong_correct", "request_id"}`` from ``tenant``'s
    verdicts. Raises ValueError when the ledger file is missing."""
    if not ledger_path.exists():
        raise ValueError(
            f"no ledger at {ledger_path}; pass --data-dir (the gateway's data directory)"
        )
    conn = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    try:
        found = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'feedback'"
        ).fetchone()
        if found is None:
            return FeedbackRows()
        cursor = conn.execute(
            """
            SELECT f.request_id, f.verdict, r.route, r.request_text
            FROM feedback f JOIN requests r ON r.request_id = f.request_id AND r.tenant = f.tenant
            WHERE f.tenant = ? ORDER BY f.ts_us
            """,
            (tenant,),
        )
        out = FeedbackRows()
        for request_id, verdict, route, text in cursor:
            labels = _LABELS.get((route, verdict))
            if labels is None:
                out.left_out[f"{verdict} on a {route} answer (says nothing about small)"] += 1
                continue
            if not text:
                out.left_out["no stored text (store_request_text is off)"] += 1
                continue
            out.rows.append(
                {
                    "prompt": text,
                    "weak_correct": labels[0],
                    "strong_correct": labels[1],
                    "request_id": request_id,
                }
            )
        return out
    finally:
        conn.close()
