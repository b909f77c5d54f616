"""The exact response cache: same tenant, same normalised request → the stored answer.

- ``key``: which requests may share an answer (``cache_key``), which are personal
  (``is_personalised``);
- ``store``: the ``CacheStore`` protocol and the embedded backend (diskcache);
- ``redis_store``: the shared backend (Redis), imported only for ``state: redis``;
- ``stage``: the pipeline stage that answers from the cache and stores fresh answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cache.key import cache_key, is_personalised, is_personalised_request
from gateway.cache.stage import CacheStage
from gateway.cache.store import CacheStore, DiskCacheStore
from gateway.config import GatewayConfig

if TYPE_CHECKING:
    from gateway.cache.redis_store import RedisStore

__all__ = [
    "CacheStage",
    "CacheStore",
    "DiskCacheStore",
    "RedisStore",
    "build_cache_store",
    "cache_key",
    "is_personalised",
    "is_personalised_request",
]


def build_cache_store(config: GatewayConfig, data_dir: Path) -> CacheStore | None:
    """The store the config asks for; None when the cache is disabled.

    ``state: embedded``: diskcache in ``data_dir / "cache"``, bounded by ``cache.max_bytes``.
    ``state: redis``: the shared Redis at ``redis.url``, bounded by ``cache.max_entries``.
    Opening does not connect to Redis: a server that is down makes lookups miss, not start-up fail.
    """
    cache = config.cache
    if not cache.enabled:
        return None
    if config.state == "redis":
        # Imported only for state: redis: the redis package costs ~6 MiB of resident memory.
        from gateway.cache.redis_store import RedisStore

        return RedisStore(config.redis.url, config.redis.key_prefix, cache.max_entries)
    return DiskCacheStore(data_dir / "cache", cache.max_bytes)


def __getattr__(name: str) -> Any:
    # RedisStore is imported on first use only (state: redis): the redis package costs ~6 MiB of
    # resident memory, which a gateway with state: embedded should not pay.
    if name == "RedisStore":
        from gateway.cache.redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
