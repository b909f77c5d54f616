"""One contract, every backend: the same tests run against SQLite and Redis.

Includes the concurrency proof at store level: 200 concurrent reservations against a limit that
covers 50 admit exactly 50, in one process and across several processes sharing the store.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from gateway.budget import (
    BudgetBackendError,
    BudgetStore,
    DuplicateReservation,
    RateHit,
    RedisBudgetStore,
    Scope,
    SqliteBudgetStore,
    reap_periodically,
)
from tests.budget.workers import StoreSpec, open_store, reserve_many
from tests.support.mock_upstream import free_port

REDIS_URL = "redis://127.0.0.1:6379/15"
# A "now" (unix seconds) for expiry and rate windows: the next full hour, so it is a multiple of
# 60 and, for Redis, whose keys expire on the real clock, not in the past.
T0 = float(math.floor(time.time() / 3600) * 3600 + 3600)
DAY_END = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own for one test; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        pytest.skip("no Redis on 127.0.0.1:6379 (start redis-server to test the Redis backend)")
    prefix = f"switchboard-test-{uuid.uuid4().hex}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass(frozen=True)
class Backend:
    """How to open (more) stores on one shared backend, here and in other processes."""

    spec: StoreSpec

    @property
    def name(self) -> str:
        return self.spec[0]

    def open(self) -> BudgetStore:
        return open_store(self.spec)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(("sqlite", str(tmp_path / "budget.sqlite3")))
    return Backend(("redis", REDIS_URL, request.getfixturevalue("redis_prefix")))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[BudgetStore]:
    s = backend.open()
    yield s
    await s.aclose()


def day(limit: int | None, key: str = "t/acme/day/2026-11-26") -> Scope:
    return Scope(key, limit, DAY_END)


def month(limit: int | None, key: str = "t/acme/month/2026-11") -> Scope:
    return Scope(key, limit, DAY_END)


# -- reserve -----------------------------------------------------------------------------------


async def test_a_reservation_within_every_limit_charges_every_scope(store: BudgetStore) -> None:
    result = await store.reserve("r1", [day(1000), month(5000)], 300, ttl_s=60)
    assert result.ok and result.blocked is None
    assert [s.spent_micros for s in result.scopes] == [300, 300]
    assert await store.spent(day(0).key) == 300
    assert await store.spent(month(0).key) == 300
    assert await store.settled(day(0).key) == 0


async def test_a_reservation_may_use_a_limit_exactly(store: BudgetStore) -> None:
    assert (await store.reserve("r1", [day(1000)], 1000, ttl_s=60)).ok
    assert not (await store.reserve("r2", [day(1000)], 1, ttl_s=60)).ok


async def test_a_refusal_charges_no_scope_and_names_the_one_that_blocked(
    store: BudgetStore,
) -> None:
    await store.reserve("r1", [month(1000)], 900, ttl_s=60)
    result = await store.reserve("r2", [day(5000), month(1000)], 200, ttl_s=60)
    assert not result.ok
    assert result.blocked is not None
    assert result.blocked.scope == month(1000)
    assert (result.blocked.spent_micros, result.blocked.limit_micros) == (900, 1000)
    assert result.blocked.remaining_micros == 100
    assert await store.spent(day(0).key) == 0  # the day scope passed its check but kept nothing
    assert await store.spent(month(0).key) == 900


async def test_a_scope_without_a_limit_counts_but_never_blocks(store: BudgetStore) -> None:
    assert (await store.reserve("r1", [day(None)], 10**12, ttl_s=60)).ok
    assert (await store.reserve("r2", [day(None)], 10**12, ttl_s=60)).ok
    assert await store.spent(day(None).key) == 2 * 10**12


async def test_the_result_says_when_a_soft_share_is_reached(store: BudgetStore) -> None:
    first = await store.reserve("r1", [day(1000), month(10_000)], 700, ttl_s=60)
    assert first.over_share(0.8) is None
    second = await store.reserve("r2", [day(1000), month(10_000)], 100, ttl_s=60)
    hit = second.over_share(0.8)
    assert hit is not None and hit.scope.key == day(0).key and hit.spent_micros == 800


async def test_a_reservation_id_cannot_be_used_twice(store: BudgetStore) -> None:
    await store.reserve("r1", [day(1000)], 100, ttl_s=60)
    with pytest.raises(DuplicateReservation):
        await store.reserve("r1", [day(1000)], 100, ttl_s=60)
    assert await store.spent(day(0).key) == 100


async def test_bad_arguments_are_refused_before_touching_the_store(store: BudgetStore) -> None:
    with pytest.raises(ValueError, match="amount_micros"):
        await store.reserve("r1", [day(1000)], -1, ttl_s=60)
    with pytest.raises(ValueError, match="once per call"):
        await store.reserve("r1", [day(1000), day(1000)], 1, ttl_s=60)
    with pytest.raises(ValueError, match="actual_micros"):
        await store.settle("r1", -5)


async def test_large_amounts_stay_exact(store: BudgetStore) -> None:
    big = 123_456_789_012_345  # about 123 million USD in micros
    assert (await store.reserve("r1", [day(None)], big, ttl_s=60)).ok
    assert await store.settle("r1", big + 1)
    assert await store.settled(day(None).key) == big + 1


async def test_an_unknown_counter_reads_as_zero(store: BudgetStore) -> None:
    assert await store.spent("never/used") == 0
    assert await store.settled("never/used") == 0


# -- settle and release ------------------------------------------------------------------------


async def test_settle_replaces_the_estimate_by_the_actual_cost(store: BudgetStore) -> None:
    await store.reserve("r1", [day(1000), month(5000)], 500, ttl_s=60)
    assert await store.settle("r1", 120)
    for key in (day(0).key, month(0).key):
        assert await store.spent(key) == 120
        assert await store.settled(key) == 120


async def test_an_actual_above_the_estimate_is_recorded_in_full(store: BudgetStore) -> None:
    await store.reserve("r1", [day(1000)], 500, ttl_s=60)
    assert await store.settle("r1", 1500)
    assert await store.settled(day(0).key) == 1500
    # Over the limit now: the next reservation is refused.
    assert not (await store.reserve("r2", [day(1000)], 1, ttl_s=60)).ok


async def test_settled_and_outstanding_are_read_apart(store: BudgetStore) -> None:
    await store.reserve("a", [day(1000)], 300, ttl_s=60)
    await store.reserve("b", [day(1000)], 200, ttl_s=60)
    await store.settle("a", 250)
    assert await store.settled(day(0).key) == 250
    assert await store.spent(day(0).key) == 450


async def test_a_reservation_settles_once(store: BudgetStore) -> None:
    await store.reserve("r1", [day(1000)], 500, ttl_s=60)
    assert await store.settle("r1", 100)
    assert not await store.settle("r1", 100)
    assert not await store.release("r1")
    assert await store.spent(day(0).key) == 100


async def test_release_gives_the_whole_reservation_back(store: BudgetStore) -> None:
    await store.reserve("r1", [day(1000), month(1000)], 600, ttl_s=60)
    assert await store.release("r1")
    assert await store.spent(day(0).key) == 0
    assert await store.spent(month(0).key) == 0
    assert (await store.reserve("r2", [day(1000)], 1000, ttl_s=60)).ok


async def test_settling_or_releasing_an_unknown_id_is_false(store: BudgetStore) -> None:
    assert not await store.settle("nope", 10)
    assert not await store.release("nope")


# -- expiry ------------------------------------------------------------------------------------


async def test_a_reservation_past_its_ttl_is_released_by_the_reaper(store: BudgetStore) -> None:
    await store.reserve("crashed", [day(1000), month(1000)], 700, ttl_s=30, now=T0)
    await store.reserve("alive", [day(1000)], 100, ttl_s=300, now=T0)
    assert await store.reap_expired(now=T0 + 29) == 0
    assert await store.spent(day(0).key) == 800
    assert await store.reap_expired(now=T0 + 31) == 1
    assert await store.spent(day(0).key) == 100
    assert await store.spent(month(0).key) == 0
    assert await store.reap_expired(now=T0 + 32) == 0  # released once only


async def test_a_late_settle_after_expiry_still_records_the_actual_cost(
    store: BudgetStore,
) -> None:
    await store.reserve("slow", [day(1000)], 700, ttl_s=30, now=T0)
    assert await store.reap_expired(now=T0 + 31) == 1
    assert await store.settle("slow", 400)
    assert await store.settled(day(0).key) == 400
    assert await store.spent(day(0).key) == 400


async def test_releasing_an_expired_reservation_changes_nothing(store: BudgetStore) -> None:
    await store.reserve("slow", [day(1000)], 700, ttl_s=30, now=T0)
    await store.reap_expired(now=T0 + 31)
    assert await store.release("slow")
    assert await store.spent(day(0).key) == 0


async def test_settled_reservations_are_not_reaped(store: BudgetStore) -> None:
    await store.reserve("done", [day(1000)], 700, ttl_s=30, now=T0)
    await store.settle("done", 500)
    assert await store.reap_expired(now=T0 + 31) == 0
    assert await store.settled(day(0).key) == 500


async def test_the_periodic_reaper_releases_what_a_dead_process_left(store: BudgetStore) -> None:
    await store.reserve("crashed", [day(1000)], 700, ttl_s=0)
    task = asyncio.create_task(reap_periodically(store, interval_s=0.01))
    try:
        for _ in range(200):
            if await store.spent(day(0).key) == 0:
                break
            await asyncio.sleep(0.01)
        assert await store.spent(day(0).key) == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- concurrency -------------------------------------------------------------------------------

AMOUNT = 1_000
LIMIT = 50 * AMOUNT + AMOUNT // 2  # covers 50.5 reservations


async def test_200_concurrent_reservations_admit_exactly_what_the_limit_covers(
    store: BudgetStore,
) -> None:
    scopes = [day(LIMIT), month(10 * LIMIT)]
    results = await asyncio.gather(
        *(store.reserve(f"r{i}", scopes, AMOUNT, ttl_s=60) for i in range(200))
    )
    assert sum(r.ok for r in results) == LIMIT // AMOUNT == 50
    assert await store.spent(day(0).key) == 50 * AMOUNT <= LIMIT
    # All or nothing held for every refusal: the month saw exactly the same 50.
    assert await store.spent(month(0).key) == 50 * AMOUNT
    assert all(
        r.blocked is not None and r.blocked.scope.key == day(0).key for r in results if not r.ok
    )


async def test_concurrent_settles_sum_exactly(store: BudgetStore) -> None:
    scopes = [day(LIMIT)]
    results = await asyncio.gather(
        *(store.reserve(f"r{i}", scopes, AMOUNT, ttl_s=60) for i in range(200))
    )
    admitted = [f"r{i}" for i, r in enumerate(results) if r.ok]
    refused = [f"r{i}" for i, r in enumerate(results) if not r.ok]
    settled = await asyncio.gather(*(store.settle(rid, 600) for rid in admitted))
    released = await asyncio.gather(*(store.release(rid) for rid in refused))
    assert all(settled) and not any(released)
    assert await store.settled(day(0).key) == 600 * len(admitted)
    assert await store.spent(day(0).key) == 600 * len(admitted)


async def test_two_connections_share_one_budget(backend: Backend, store: BudgetStore) -> None:
    other = backend.open()
    try:
        scopes = [day(LIMIT)]
        results = await asyncio.gather(
            *(
                (store if i % 2 else other).reserve(f"r{i}", scopes, AMOUNT, ttl_s=60)
                for i in range(200)
            )
        )
        assert sum(r.ok for r in results) == 50
        assert await other.spent(day(0).key) == 50 * AMOUNT
    finally:
        await other.aclose()


def test_several_processes_sharing_the_store_admit_exactly_what_the_limit_covers(
    backend: Backend,
) -> None:
    processes, per_process = 3, 70
    if backend.name == "sqlite":
        # Create the schema once, before the processes race to open the file.
        asyncio.run(_open_and_close(backend))
    scopes = [day(LIMIT), month(10 * LIMIT)]
    start_at = time.time() + 1.5  # after every spawned interpreter has imported its modules
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        admitted = pool.starmap(
            reserve_many,
            [(backend.spec, w, per_process, scopes, AMOUNT, start_at) for w in range(processes)],
        )
    # How the 50 split between the processes varies from run to run; the total may not.
    assert sum(admitted) == 50, admitted
    spent = asyncio.run(_spent(backend, [day(0).key, month(0).key]))
    assert spent == [50 * AMOUNT, 50 * AMOUNT]


async def _open_and_close(backend: Backend) -> None:
    await backend.open().aclose()


async def _spent(backend: Backend, keys: list[str]) -> list[int]:
    s = backend.open()
    try:
        return [await s.spent(k) for k in keys]
    finally:
        await s.aclose()


# -- rate limits -------------------------------------------------------------------------------


async def test_a_fixed_window_allows_the_limit_then_refuses(store: BudgetStore) -> None:
    now = T0 + 15  # 15 s into a minute window
    results = [await store.hit("rl/acme/requests", 3, 60, now=now) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert results[-1].reset_s == pytest.approx(45)
    assert results[-1].limit == 3


async def test_the_next_window_starts_from_zero(store: BudgetStore) -> None:
    for _ in range(3):
        await store.hit("rl/acme/requests", 3, 60, now=T0)
    assert not (await store.hit("rl/acme/requests", 3, 60, now=T0)).allowed
    nxt = await store.hit("rl/acme/requests", 3, 60, now=T0 + 60)
    assert nxt.allowed and nxt.remaining == 2


async def test_a_refused_hit_counts_nothing(store: BudgetStore) -> None:
    assert (await store.hit("rl/acme/tokens", 100, 60, 60, now=T0)).allowed
    refused = await store.hit("rl/acme/tokens", 100, 60, 50, now=T0)
    assert not refused.allowed and refused.remaining == 40
    fits = await store.hit("rl/acme/tokens", 100, 60, 40, now=T0)
    assert fits.allowed and fits.remaining == 0


async def test_rate_counters_are_independent(store: BudgetStore) -> None:
    assert (await store.hit("rl/a/requests", 1, 60, now=T0)).allowed
    assert (await store.hit("rl/b/requests", 1, 60, now=T0)).allowed
    assert not (await store.hit("rl/a/requests", 1, 60, now=T0)).allowed


async def test_several_counters_are_hit_all_or_nothing(store: BudgetStore) -> None:
    key_rpm = RateHit("rl/acme/key/k1/requests", 10, 60)
    tenant_tpm = RateHit("rl/acme/tokens", 1000, 60, amount=700)
    first = await store.hit_many([key_rpm, tenant_tpm], now=T0)
    assert [r.allowed for r in first] == [True, True]
    assert [r.remaining for r in first] == [9, 300]
    refused = await store.hit_many([key_rpm, tenant_tpm], now=T0)  # tokens would reach 1400
    assert [r.allowed for r in refused] == [True, False]
    assert [r.remaining for r in refused] == [9, 300]  # nothing counted, not even requests
    small = await store.hit_many([key_rpm, RateHit("rl/acme/tokens", 1000, 60, 300)], now=T0)
    assert [r.remaining for r in small] == [8, 0]
    assert await store.hit_many([], now=T0) == ()


async def test_a_counter_may_appear_once_per_hit_many(store: BudgetStore) -> None:
    with pytest.raises(ValueError, match="once per call"):
        await store.hit_many([RateHit("rl/a", 5), RateHit("rl/a", 5)])


async def test_concurrent_hits_never_pass_the_limit(store: BudgetStore) -> None:
    results = await asyncio.gather(
        *(store.hit("rl/acme/requests", 30, 60, now=T0) for _ in range(100))
    )
    assert sum(r.allowed for r in results) == 30


# -- backend failures --------------------------------------------------------------------------


async def test_unreachable_redis_raises_budget_backend_error_quickly() -> None:
    store = RedisBudgetStore(f"redis://127.0.0.1:{free_port()}/0", "x:", retry_after_s=0.2)
    calls: list[Callable[[], object]] = [
        lambda: store.reserve("r1", [day(1000)], 1, ttl_s=60),
        lambda: store.settle("r1", 1),
        lambda: store.release("r1"),
        lambda: store.spent("k"),
        lambda: store.settled("k"),
        lambda: store.reap_expired(),
        lambda: store.hit("rl/k", 1, 60),
    ]
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BudgetBackendError, match="Redis"):
                await call()  # type: ignore[misc]
            assert time.monotonic() - started < 1.0
    finally:
        await store.aclose()


async def test_after_a_redis_failure_calls_fail_at_once_until_the_retry_time() -> None:
    store = RedisBudgetStore(f"redis://127.0.0.1:{free_port()}/0", "x:", retry_after_s=30)
    try:
        with pytest.raises(BudgetBackendError):
            await store.spent("k")
        with pytest.raises(BudgetBackendError, match="unavailable; retrying in"):
            await store.spent("k")
    finally:
        await store.aclose()


async def test_a_redis_password_never_appears_in_the_error() -> None:
    store = RedisBudgetStore(f"redis://user:s3cret@127.0.0.1:{free_port()}/0", "x:")
    try:
        with pytest.raises(BudgetBackendError) as info:
            await store.spent("k")
        assert "s3cret" not in str(info.value)
        assert "redis://***@127.0.0.1" in str(info.value)
    finally:
        await store.aclose()


async def test_a_sqlite_file_locked_too_long_raises_budget_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "budget.sqlite3"
    store = SqliteBudgetStore(path, busy_timeout_ms=100)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(BudgetBackendError, match="locked"):
            await store.reserve("r1", [day(1000)], 1, ttl_s=60)
        holder.execute("ROLLBACK")
        assert (await store.reserve("r1", [day(1000)], 1, ttl_s=60)).ok
    finally:
        holder.close()
        await store.aclose()


def test_an_unusable_sqlite_path_raises_budget_backend_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(BudgetBackendError, match="data directory"):
        SqliteBudgetStore(tmp_path / "a-file" / "budget.sqlite3")


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteBudgetStore(tmp_path / "budget.sqlite3")
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(BudgetBackendError, match="closed"):
        await store.spent("k")


# -- Redis key layout --------------------------------------------------------------------------


async def test_redis_counters_and_reservations_expire_on_their_own(redis_prefix: str) -> None:
    store = RedisBudgetStore(REDIS_URL, redis_prefix, counter_retention_s=3600, tombstone_s=600)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        now = time.time()
        await store.reserve("r1", [day(1000)], 10, ttl_s=60, now=now)
        counter_ttl = client.ttl(f"{redis_prefix}budget:c:{day(0).key}")
        expected = DAY_END.timestamp() + 3600 - now
        assert abs(counter_ttl - expected) <= 2  # type: ignore[operator]
        reservation_ttl = client.ttl(f"{redis_prefix}budget:r:r1")
        assert 60 + 600 - 2 <= reservation_ttl <= 60 + 600 + 1  # type: ignore[operator]
        await store.hit("rl/acme/requests", 5, 60, now=now)
        (rate_key,) = client.keys(f"{redis_prefix}budget:rl:*")
        assert 0 < client.pttl(rate_key) <= 120_000  # type: ignore[operator]
    finally:
        client.close()
        await store.aclose()


async def test_a_redis_error_reply_is_a_budget_backend_error_too(redis_prefix: str) -> None:
    store = RedisBudgetStore(REDIS_URL, redis_prefix, retry_after_s=30)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.set(f"{redis_prefix}budget:c:{day(0).key}", "not a hash")  # WRONGTYPE for HMGET
        with pytest.raises(BudgetBackendError, match="WRONGTYPE"):
            await store.reserve("r1", [day(1000)], 1, ttl_s=60)
        # An error reply concerns one key: the store stays available for the others.
        assert (await store.reserve("r2", [month(1000)], 1, ttl_s=60)).ok
    finally:
        client.close()
        await store.aclose()
