"""Budget counters reconciled with the ledger after a crash.

A request's ledger record is committed before its budget reservation is settled (the ledger
stage runs ahead of the settle; docs/reliability.md). A process killed between the two leaves a
reservation open whose cost the ledger already holds: the counters would lag the ledger by it
(and the reaper would later release it as if nothing had been spent). At start, before serving,
``settle_recorded_reservations`` settles every open reservation that has a ledger record to the
recorded cost. Reservations without a record stay open for the reaper: those requests were never
answered (no answer ends before its record is committed), so there is nothing to bill.

A live process's reservation may be settled here too (its record committed a moment ago); its
own settle then finds nothing and changes nothing, so no cost is counted twice.
"""

from __future__ import annotations

import logging

import anyio

from gateway.budget import BudgetBackendError, BudgetStore
from gateway.ledger import LedgerError, SqliteLedger

log = logging.getLogger("gateway.reconcile")


async def settle_recorded_reservations(store: BudgetStore, ledger: SqliteLedger) -> int:
    """Settle open reservations whose request is in the ledger; returns how many were settled.

    Never raises: a store or ledger that cannot be read is logged, and the reaper still
    releases those reservations after their TTL.
    """
    try:
        open_ids = await store.open_reservations()
        if not open_ids:
            return 0
        costs = await anyio.to_thread.run_sync(ledger.recorded_costs, open_ids)
        settled = 0
        for reservation_id, cost in costs.items():
            if await store.settle(reservation_id, cost):
                settled += 1
    except (BudgetBackendError, LedgerError) as exc:
        log.warning("could not reconcile budget reservations with the ledger: %s", exc)
        return 0
    if settled:
        log.warning(
            "settled %d budget reservation(s) from the ledger: a previous process recorded "
            "these requests and stopped before settling them",
            settled,
        )
    return settled
