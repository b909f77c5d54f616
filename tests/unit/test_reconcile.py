"""``settle_recorded_reservations``: open reservations the ledger holds are settled from it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.budget import Scope, SqliteBudgetStore
from gateway.ledger import SqliteLedger
from gateway.reconcile import settle_recorded_reservations
from tests.unit.test_ledger import make_record

DAY = "t/acme/day/2026-11-26"


def test_recorded_reservations_are_settled_to_the_recorded_cost_and_the_rest_left_open(
    tmp_path: Path,
) -> None:
    async def run() -> tuple[int, int, int, list[str], int]:
        store = SqliteBudgetStore(tmp_path / "budget.sqlite3")
        with SqliteLedger(tmp_path / "ledger.sqlite3") as ledger:
            scopes = [Scope(DAY, None, None)]
            for rid in ("recorded", "unrecorded"):
                assert (await store.reserve(rid, scopes, 1_000, ttl_s=600)).ok
            # The process "died" after committing this record and before settling it.
            ledger.record(make_record(request_id="recorded", cost_micros=420))
            ledger.flush()
            settled_now = await settle_recorded_reservations(store, ledger)
            again = await settle_recorded_reservations(store, ledger)
        result = (
            settled_now,
            again,
            await store.settled(DAY),
            await store.open_reservations(),
            await store.spent(DAY),
        )
        await store.aclose()
        return result

    settled_now, again, settled, still_open, spent = asyncio.run(run())
    assert (settled_now, again) == (1, 0)  # idempotent: a second pass finds nothing to do
    assert settled == 420
    assert still_open == ["unrecorded"]  # never answered: the reaper releases it after its TTL
    assert spent == 420 + 1_000
