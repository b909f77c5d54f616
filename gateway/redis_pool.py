"""The Redis client every Redis-backed store uses: a bounded pool, short timeouts, no retries.

Imported only with ``state: redis`` (the redis package costs ~6 MiB of resident memory).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["bounded_client"]


def bounded_client(
    url: str, *, max_connections: int, pool_timeout_s: float, timeout_s: float
) -> aioredis.Redis:
    """A client whose pool holds at most ``max_connections``: a burst waits (up to
    ``pool_timeout_s``) for a free connection rather than opening one per request, or failing
    once redis-py's default cap of 2**31 connections meets the server's maxclients. A call
    that times out (``timeout_s``) is not retried: the store's caller decides what a failure
    means (a cache miss, the tenant's ``on_backend_error``)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)
