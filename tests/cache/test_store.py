"""One suite, every backend: the same tests run against diskcache and Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from gateway.cache.redis_store import RedisStore
from gateway.cache.store import CacheStore, DiskCacheStore
from tests.support.mock_upstream import free_port

REDIS_URL = "redis://127.0.0.1:6379/15"


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


@pytest.fixture(params=["diskcache", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CacheStore]:
    """Each backend in turn: every test taking ``store`` runs against all of them."""
    backend: CacheStore
    if request.param == "diskcache":
        backend = DiskCacheStore(tmp_path / "cache", max_bytes=64 * 1024 * 1024)
    else:
        prefix = request.getfixturevalue("redis_prefix")
        backend = RedisStore(REDIS_URL, prefix, max_entries=1000)
    yield backend
    await backend.aclose()


async def test_a_stored_value_is_read_back(store: CacheStore) -> None:
    await store.set("k1", b'{"answer": "yes"}', ttl_s=60)
    assert await store.get("k1") == b'{"answer": "yes"}'


async def test_values_are_bytes_of_any_kind_and_size(store: CacheStore) -> None:
    binary = bytes(range(256))
    large = os.urandom(100_000)  # diskcache keeps values over 32 KB in files
    await store.set("binary", binary, ttl_s=60)
    await store.set("large", large, ttl_s=60)
    assert await store.get("binary") == binary
    assert await store.get("large") == large


async def test_a_missing_key_reads_as_none(store: CacheStore) -> None:
    assert await store.get("never-stored") is None


async def test_setting_a_key_again_overwrites_it(store: CacheStore) -> None:
    await store.set("k", b"first", ttl_s=60)
    await store.set("k", b"second", ttl_s=60)
    assert await store.get("k") == b"second"


async def test_keys_are_independent(store: CacheStore) -> None:
    await store.set("a", b"A", ttl_s=60)
    await store.set("b", b"B", ttl_s=60)
    assert (await store.get("a"), await store.get("b")) == (b"A", b"B")


async def test_a_value_expires_after_its_ttl(store: CacheStore) -> None:
    await store.set("short", b"soon gone", ttl_s=0.2)
    await store.set("long", b"still here", ttl_s=60)
    assert await store.get("short") == b"soon gone"
    await asyncio.sleep(0.4)
    assert await store.get("short") is None
    assert await store.get("long") == b"still here"


async def test_redis_store_keeps_at_most_max_entries_evicting_the_oldest(
    redis_prefix: str,
) -> None:
    store = RedisStore(REDIS_URL, redis_prefix, max_entries=3)
    try:
        for i in range(5):
            await store.set(f"k{i}", f"v{i}".encode(), ttl_s=60)
        found = [await store.get(f"k{i}") for i in range(5)]
    finally:
        await store.aclose()
    assert found == [None, None, b"v2", b"v3", b"v4"]


async def test_redis_store_without_a_bound_writes_plain_keys(redis_prefix: str) -> None:
    store = RedisStore(REDIS_URL, redis_prefix, max_entries=None)
    try:
        await store.set("k", b"v", ttl_s=60)
        assert await store.get("k") == b"v"
    finally:
        await store.aclose()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert await client.get(f"{redis_prefix}cache:k") == b"v"
        assert 0 < await client.pttl(f"{redis_prefix}cache:k") <= 60_000
    finally:
        await client.aclose()


async def test_unreachable_redis_reads_as_a_miss_and_skips_stores_logging_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "x:", max_entries=10)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.cache"):
            assert await store.get("k") is None
            await store.set("k", b"v", ttl_s=60)  # must not raise
            assert await store.get("k") is None
    finally:
        await store.aclose()
    warnings = [r for r in caplog.records if r.name == "gateway.cache"]
    assert len(warnings) == 1
    assert "cache off for" in warnings[0].getMessage()


async def test_a_burst_beyond_the_redis_pool_waits_or_misses_and_keeps_the_cache_on(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(REDIS_URL, redis_prefix, max_connections=2, pool_timeout_s=0.01)
    try:
        await store.set("k", b"v", ttl_s=60)
        with caplog.at_level(logging.WARNING, logger="gateway.cache"):
            burst = await asyncio.gather(*(store.get("k") for _ in range(200)))
            after = await store.get("k")
        pool = store._client.connection_pool
    finally:
        await store.aclose()
    assert set(burst) <= {b"v", None}
    assert after == b"v"  # a full pool is not an outage: the cache stayed on
    assert not [r for r in caplog.records if r.name == "gateway.cache"]
    assert pool.max_connections == 2
