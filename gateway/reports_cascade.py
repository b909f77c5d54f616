"""The cascade's part of a spend report: how often the small tier's answer was kept, escalated to
the large tier, or sent unjudged, and what those requests saved against the large tier.

The savings are the ledger's own (``large_cost - cost`` per record): a kept answer saves the
large tier's price of its tokens minus the small tier's; an escalated one costs the discarded
small answer on top of the large one, so its savings are that small cost, negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.ledger import Ledger, SummaryRow, TenantSet
from gateway.money import format_usd

OUTCOMES: tuple[str, ...] = ("kept", "escalated", "unjudged")


@dataclass(frozen=True, slots=True)
class CascadeOutcome:
    outcome: str
    requests: int
    cost_micros: int
    large_cost_micros: int

    @property
    def savings_micros(self) -> int:
        return self.large_cost_micros - self.cost_micros


@dataclass(frozen=True, slots=True)
class CascadeSummary:
    outcomes: tuple[CascadeOutcome, ...]  # one per OUTCOMES entry, in that order

    @property
    def requests(self) -> int:
        return sum(o.requests for o in self.outcomes)

    def of(self, outcome: str) -> CascadeOutcome:
        return next(o for o in self.outcomes if o.outcome == outcome)

    @property
    def escalated_share(self) -> float:
        judged = self.of("kept").requests + self.of("escalated").requests
        return self.of("escalated").requests / judged if judged else 0.0

    @property
    def savings_micros(self) -> int:
        return sum(o.savings_micros for o in self.outcomes)


def cascade_summary(
    ledger: Ledger,
    tenant_sets: Sequence[TenantSet],
    since: datetime | None,
    until: datetime | None,
) -> CascadeSummary | None:
    """The cascade's outcomes in ``[since, until)`` (raw records and rolled-up days); None when
    it never ran."""
    rows: list[SummaryRow] = []
    for tenants in tenant_sets:
        rows.extend(ledger.cascade_outcomes(tenants, since, until))
    if not rows:
        return None
    sums = {name: [0, 0, 0] for name in OUTCOMES}
    for row in rows:
        acc = sums.setdefault(row.key.get("cascade", ""), [0, 0, 0])
        acc[0] += row.requests
        acc[1] += row.cost_micros
        acc[2] += row.large_cost_micros
    return CascadeSummary(tuple(CascadeOutcome(name, *values) for name, values in sums.items()))


def cascade_json(summary: CascadeSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None

    def money(name: str, micros: int) -> dict[str, Any]:
        return {f"{name}_micros": micros, f"{name}_usd": format_usd(micros)}

    return {
        "requests": summary.requests,
        # Of the answers judged (kept or escalated): the share the large tier had to redo.
        "escalated_share": round(summary.escalated_share, 4),
        **money("savings", summary.savings_micros),
        "outcomes": {
            o.outcome: {
                "requests": o.requests,
                **money("cost", o.cost_micros),
                **money("large_cost", o.large_cost_micros),
                **money("savings", o.savings_micros),
            }
            for o in summary.outcomes
        },
    }


def cascade_lines(summary: CascadeSummary | None) -> str:
    """A line for the text report under the table; empty when the cascade never ran."""
    if summary is None:
        return ""
    counts = ", ".join(f"{o.requests} {o.outcome}" for o in summary.outcomes)
    return (
        f"cascade: {counts} ({summary.escalated_share:.1%} of judged answers escalated); "
        f"saved {format_usd(summary.savings_micros)} USD against the large tier\n"
    )
