"""Code run in separate OS processes by the contract tests (spawned: keep the imports light)."""

from __future__ import annotations

import asyncio
import random
import time

from gateway.budget.redis_store import RedisBudgetStore
from gateway.budget.sqlite_store import SqliteBudgetStore
from gateway.budget.store import BudgetStore, Scope

# ("sqlite", path) or ("redis", url, key_prefix)
StoreSpec = tuple[str, ...]


def open_store(spec: StoreSpec) -> BudgetStore:
    if spec[0] == "sqlite":
        return SqliteBudgetStore(spec[1])
    # The gateway's own timeout (gateway/service.py): 0.5 s connects failed on a loaded CI box.
    return RedisBudgetStore(spec[1], spec[2], timeout_s=2.0)


async def _reserve_many(
    spec: StoreSpec, worker: int, n: int, scopes: list[Scope], amount: int, start_at: float
) -> int:
    store = open_store(spec)
    try:
        # Every process starts at the same instant and spreads its calls over the same 100 ms,
        # so calls from different processes interleave rather than run one process after another.
        rng = random.Random(worker)
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def one(i: int) -> bool:
            await asyncio.sleep(rng.random() * 0.1)
            return (await store.reserve(f"p{worker}-{i}", scopes, amount, ttl_s=60)).ok

        return sum(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        await store.aclose()


def reserve_many(
    spec: StoreSpec, worker: int, n: int, scopes: list[Scope], amount: int, start_at: float
) -> int:
    """Fire ``n`` concurrent reservations from this process; returns how many succeeded."""
    return asyncio.run(_reserve_many(spec, worker, n, scopes, amount, start_at))
