"""Where cached answers live: one small protocol, an embedded backend and a shared one.

- ``DiskCacheStore``: diskcache (SQLite + files) in the data directory, bounded in bytes. The
  embedded default: one host, no server.
- ``RedisStore`` (in ``gateway.cache.redis_store``, imported only for ``state: redis``: the
  redis package costs ~6 MiB of resident memory): Redis, so several gateway processes on several
  hosts share one cache.

A cache is an optimisation, never a dependency: every backend turns its own failures (disk full,
database locked, Redis down or slow) into a logged miss or a skipped store, here and nowhere
else, so a broken cache can make the gateway slower but never fail a request.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Protocol

import diskcache

log = logging.getLogger("gateway.cache")


class CacheStore(Protocol):
    """Bytes by key, each with a time to live. Never raises on a backend failure."""

    async def get(self, key: str) -> bytes | None:
        """The stored value, or None when missing, expired or the backend is unavailable."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds (best effort: failures are logged, not raised)."""
        ...

    async def aclose(self) -> None:
        """Release files and connections."""
        ...


_DISK_ERRORS = (diskcache.Timeout, sqlite3.Error, OSError)


class DiskCacheStore:
    """A diskcache ``Cache`` in ``directory``, at most ``max_bytes`` (oldest entries culled).

    Measured on the development machine (1.5 KB values, 5,000 entries): a hit costs 8 µs and a
    miss 6 µs with eviction by least recently *stored*, so ``get`` runs inline: a thread hop
    (``asyncio.to_thread``) alone costs about 100 µs there. With least recently *used* every hit
    becomes a write transaction (166 µs, and it takes the database's write lock that every
    gateway process shares), which is why LRS is the default: with a TTL of hours, what the two
    keep differs little. ``set`` writes (134 µs, more when culling or when another process holds
    the lock) and runs in a worker thread; it happens after an upstream call that took far longer.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        eviction_policy: str = "least-recently-stored",
        lock_timeout_s: float = 1.0,
    ) -> None:
        self.directory = directory
        # timeout: SQLite's busy wait. diskcache's default (60 s) would stall a request that long
        # behind another process's write; a short wait then a miss is the better failure.
        self._cache = diskcache.Cache(
            str(directory),
            size_limit=max_bytes,
            eviction_policy=eviction_policy,
            timeout=lock_timeout_s,
        )
        # An LRU read is a write: keep it off the event loop.
        self._get_in_thread = eviction_policy == "least-recently-used"

    def _get(self, key: str) -> bytes | None:
        try:
            value = self._cache.get(key, default=None, retry=False)
        except _DISK_ERRORS as exc:
            log.warning("cache read failed (%s: %s); treating as a miss", type(exc).__name__, exc)
            return None
        return value if isinstance(value, bytes) else None

    def _set(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            self._cache.set(key, value, expire=ttl_s, retry=False)
        except _DISK_ERRORS as exc:
            log.warning("cache write failed (%s: %s); answer not cached", type(exc).__name__, exc)

    async def get(self, key: str) -> bytes | None:
        if self._get_in_thread:
            return await asyncio.to_thread(self._get, key)
        return self._get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await asyncio.to_thread(self._set, key, value, ttl_s)

    async def aclose(self) -> None:
        self._cache.close()
