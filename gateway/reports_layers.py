"""The answer-reuse layers' part of a spend report: how many requests each layer answered
without a model (exact cache, approved answers, semantic cache) and what they saved.

A hit costs 0, so its savings are the baseline price of its tokens (``large_cost``); the counts
come from raw ledger records (``requests.cache_layer``): rolled-up days keep only the total of
cache hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.ledger import Ledger, SummaryRow, TenantSet
from gateway.money import format_usd

LAYERS: tuple[str, ...] = ("exact", "answers", "semantic")


@dataclass(frozen=True, slots=True)
class LayerCount:
    layer: str
    requests: int
    cost_micros: int
    large_cost_micros: int

    @property
    def savings_micros(self) -> int:
        return self.large_cost_micros - self.cost_micros


@dataclass(frozen=True, slots=True)
class LayerSummary:
    layers: tuple[LayerCount, ...]  # one per LAYERS entry, in that order

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.layers)

    @property
    def savings_micros(self) -> int:
        return sum(c.savings_micros for c in self.layers)

    def of(self, layer: str) -> LayerCount:
        return next(c for c in self.layers if c.layer == layer)


def layer_summary(
    ledger: Ledger,
    tenant_sets: Sequence[TenantSet],
    since: datetime | None,
    until: datetime | None,
) -> LayerSummary | None:
    """Requests answered per layer over raw records in ``[since, until)``; None when none was."""
    rows: list[SummaryRow] = []
    for tenants in tenant_sets:
        rows.extend(ledger.cache_layers(tenants, since, until))
    if not rows:
        return None
    sums = {name: [0, 0, 0] for name in LAYERS}
    for row in rows:
        acc = sums.setdefault(row.key.get("cache_layer", ""), [0, 0, 0])
        acc[0] += row.requests
        acc[1] += row.cost_micros
        acc[2] += row.large_cost_micros
    return LayerSummary(tuple(LayerCount(name, *values) for name, values in sums.items()))


def layers_json(summary: LayerSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None

    def money(name: str, micros: int) -> dict[str, Any]:
        return {f"{name}_micros": micros, f"{name}_usd": format_usd(micros)}

    return {
        "requests": summary.requests,
        **money("savings", summary.savings_micros),
        "layers": {
            c.layer: {
                "requests": c.requests,
                **money("cost", c.cost_micros),
                **money("large_cost", c.large_cost_micros),
                **money("savings", c.savings_micros),
            }
            for c in summary.layers
        },
    }


def layers_lines(summary: LayerSummary | None) -> str:
    """A line for the text report under the table; empty when no layer answered."""
    if summary is None:
        return ""
    counts = ", ".join(
        f"{c.requests} {c.layer} (saved {format_usd(c.savings_micros)})" for c in summary.layers
    )
    return f"answered without a model: {counts} USD\n"
