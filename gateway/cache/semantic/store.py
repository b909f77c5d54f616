"""Where semantic-cache entries live: one small protocol, an in-memory and a diskcache backend.

The in-process index (``index.py``) is a mirror: at start-up (or ``SemanticCache.refresh``) a
tenant's entries are read back from the store. An entry holds the masked text's vector, the guard
signature (entity *hashes*, never values), the answer payload the caller gave, its times, and
the id of the request whose answer it is; the question's text is not stored.

- ``MemorySemanticStore``: a dict; for tests, ``gateway cache replay`` / ``match``, and a
  process that wants no disk.
- ``DiskSemanticStore``: diskcache in the data directory (the embedded default, beside the exact
  cache), entries expire in the store too.
- ``RedisSemanticStore``: Redis (``state: redis``), so several gateway processes share entries:
  one key per entry with the entry's TTL, a set of ids per tenant, one key per request link.

Like the exact cache's stores, a backend turns its own failures into a logged miss or a skipped
write: a broken cache makes the gateway slower, never failing.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import diskcache
import msgspec
import redis
from redis.exceptions import RedisError

log = logging.getLogger("gateway.cache.semantic")

__all__ = [
    "DiskSemanticStore",
    "MemorySemanticStore",
    "RedisSemanticStore",
    "SemanticEntry",
    "SemanticStore",
]


class SemanticEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    vector: bytes  # float32, little-endian
    signature: dict[str, object]
    context: str = ""  # hash of the earlier turns ("" for a single-turn request)
    answer: bytes
    stored_at: float
    expires_at: float
    request_id: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SemanticEntry).decode


class SemanticStore(Protocol):
    """Entries by (tenant, id), and which entry a request was answered from. Never raises on a
    backend failure."""

    def put(self, entry: SemanticEntry) -> None: ...

    def get(self, tenant: str, entry_id: str) -> SemanticEntry | None: ...

    def delete(self, tenant: str, entry_id: str) -> bool: ...

    def entries(self, tenant: str) -> Iterator[SemanticEntry]:
        """The tenant's entries, expired ones included (the caller skips them)."""
        ...

    def purge(self, tenant: str) -> int:
        """Delete every entry of the tenant; how many there were."""
        ...

    def link(self, tenant: str, request_id: str, entry_id: str, ttl_s: float) -> None:
        """Remember that ``request_id`` was answered from ``entry_id`` (for feedback)."""
        ...

    def linked(self, tenant: str, request_id: str) -> str | None: ...

    def close(self) -> None: ...


class MemorySemanticStore:
    def __init__(self, clock: object = time.time) -> None:
        self._entries: dict[str, dict[str, SemanticEntry]] = {}
        self._links: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock if callable(clock) else time.time

    def put(self, entry: SemanticEntry) -> None:
        with self._lock:
            self._entries.setdefault(entry.tenant, {})[entry.id] = entry

    def get(self, tenant: str, entry_id: str) -> SemanticEntry | None:
        return self._entries.get(tenant, {}).get(entry_id)

    def delete(self, tenant: str, entry_id: str) -> bool:
        with self._lock:
            return self._entries.get(tenant, {}).pop(entry_id, None) is not None

    def entries(self, tenant: str) -> Iterator[SemanticEntry]:
        yield from list(self._entries.get(tenant, {}).values())

    def purge(self, tenant: str) -> int:
        with self._lock:
            return len(self._entries.pop(tenant, {}))

    def link(self, tenant: str, request_id: str, entry_id: str, ttl_s: float) -> None:
        with self._lock:
            self._links[(tenant, request_id)] = (entry_id, self._clock() + ttl_s)

    def linked(self, tenant: str, request_id: str) -> str | None:
        found = self._links.get((tenant, request_id))
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def close(self) -> None:
        pass


_DISK_ERRORS = (diskcache.Timeout, sqlite3.Error, OSError, msgspec.DecodeError)


class DiskSemanticStore:
    """diskcache in ``directory``; keys ``("entry", tenant, id)`` and ``("link", tenant,
    request id)``, each tagged with the tenant so a purge is one ``evict``. Bounded in bytes by
    diskcache (``max_bytes``) and in entries per tenant by the cache's policy."""

    def __init__(self, directory: Path, max_bytes: int = 1 << 30, lock_timeout_s: float = 1.0):
        self.directory = directory
        self._cache = diskcache.Cache(
            str(directory),
            size_limit=max_bytes,
            eviction_policy="least-recently-stored",
            timeout=lock_timeout_s,
        )

    def _failed(self, what: str, exc: BaseException) -> None:
        log.warning("semantic cache store: %s failed (%s: %s)", what, type(exc).__name__, exc)

    def put(self, entry: SemanticEntry) -> None:
        # The entry's own time to live (its times come from the cache's clock, not this one).
        expire = max(0.001, entry.expires_at - entry.stored_at)
        try:
            self._cache.set(
                ("entry", entry.tenant, entry.id), _encode(entry), expire=expire, tag=entry.tenant
            )
        except _DISK_ERRORS as exc:
            self._failed("write", exc)

    def get(self, tenant: str, entry_id: str) -> SemanticEntry | None:
        try:
            raw = self._cache.get(("entry", tenant, entry_id))
            return _decode(raw) if isinstance(raw, bytes) else None
        except _DISK_ERRORS as exc:
            self._failed("read", exc)
            return None

    def delete(self, tenant: str, entry_id: str) -> bool:
        try:
            return bool(self._cache.delete(("entry", tenant, entry_id)))
        except _DISK_ERRORS as exc:
            self._failed("delete", exc)
            return False

    def entries(self, tenant: str) -> Iterator[SemanticEntry]:
        try:
            keys = [
                k for k in self._cache.iterkeys()
                if isinstance(k, tuple) and len(k) == 3 and k[0] == "entry" and k[1] == tenant
            ]
        except _DISK_ERRORS as exc:
            self._failed("scan", exc)
            return
        for key in keys:
            entry = self.get(tenant, key[2])
            if entry is not None:
                yield entry

    def purge(self, tenant: str) -> int:
        count = sum(1 for _ in self.entries(tenant))
        try:
            self._cache.evict(tenant)
        except _DISK_ERRORS as exc:
            self._failed("purge", exc)
        return count

    def link(self, tenant: str, request_id: str, entry_id: str, ttl_s: float) -> None:
        try:
            self._cache.set(("link", tenant, request_id), entry_id, expire=ttl_s, tag=tenant)
        except _DISK_ERRORS as exc:
            self._failed("write", exc)

    def linked(self, tenant: str, request_id: str) -> str | None:
        try:
            value = self._cache.get(("link", tenant, request_id))
        except _DISK_ERRORS as exc:
            self._failed("read", exc)
            return None
        return value if isinstance(value, str) else None

    def close(self) -> None:
        self._cache.close()


_REDIS_ERRORS = (RedisError, OSError, msgspec.DecodeError)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisSemanticStore:
    """Redis under ``key_prefix``: ``sem:<tenant hash>:e:<id>`` (an entry, expiring with it),
    ``sem:<tenant hash>:ids`` (the tenant's ids; ids of expired entries are dropped when read) and
    ``sem:<tenant hash>:r:<request id>`` (a link). The tenant is hashed into the key, so no name
    can reach into another tenant's keys. Short timeouts: a slow Redis is a miss."""

    def __init__(self, url: str, key_prefix: str = "switchboard:", timeout_s: float = 0.25):
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = key_prefix

    def _base(self, tenant: str) -> str:
        return f"{self._prefix}sem:{hashlib.sha256(tenant.encode()).hexdigest()[:16]}:"

    def _failed(self, what: str, exc: BaseException) -> None:
        log.warning("semantic cache redis: %s failed (%s: %s)", what, type(exc).__name__, exc)

    def put(self, entry: SemanticEntry) -> None:
        base = self._base(entry.tenant)
        ttl_ms = max(1, round((entry.expires_at - entry.stored_at) * 1000))
        try:
            pipe = self._client.pipeline()
            pipe.set(base + "e:" + entry.id, _encode(entry), px=ttl_ms)
            pipe.sadd(base + "ids", entry.id)
            pipe.execute()
        except _REDIS_ERRORS as exc:
            self._failed("write", exc)

    def get(self, tenant: str, entry_id: str) -> SemanticEntry | None:
        try:
            raw = self._client.get(self._base(tenant) + "e:" + entry_id)
            return _decode(raw) if isinstance(raw, bytes) else None
        except _REDIS_ERRORS as exc:
            self._failed("read", exc)
            return None

    def delete(self, tenant: str, entry_id: str) -> bool:
        base = self._base(tenant)
        try:
            pipe = self._client.pipeline()
            pipe.delete(base + "e:" + entry_id)
            pipe.srem(base + "ids", entry_id)
            deleted, _ = pipe.execute()
            return bool(deleted)
        except _REDIS_ERRORS as exc:
            self._failed("delete", exc)
            return False

    def entries(self, tenant: str) -> Iterator[SemanticEntry]:
        base = self._base(tenant)
        try:
            ids = sorted(_text(i) for i in self._client.smembers(base + "ids"))
        except _REDIS_ERRORS as exc:
            self._failed("scan", exc)
            return
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            try:
                values = self._client.mget([base + "e:" + i for i in batch])
            except _REDIS_ERRORS as exc:
                self._failed("read", exc)
                return
            gone = [i for i, raw in zip(batch, values, strict=True) if raw is None]
            if gone:
                try:
                    self._client.srem(base + "ids", *gone)
                except _REDIS_ERRORS as exc:
                    self._failed("write", exc)
            for raw in values:
                if isinstance(raw, bytes):
                    try:
                        yield _decode(raw)
                    except msgspec.DecodeError:
                        log.warning("semantic cache redis: unreadable entry skipped")

    def purge(self, tenant: str) -> int:
        base = self._base(tenant)
        try:
            ids = [_text(i) for i in self._client.smembers(base + "ids")]
            keys = [base + "e:" + i for i in ids]
            values = self._client.mget(keys) if keys else []
            live = sum(1 for value in values if value is not None)
            links = list(self._client.scan_iter(match=base + "r:*", count=1000))
            if keys or links:
                self._client.delete(*keys, *links)
            self._client.delete(base + "ids")
            return live
        except _REDIS_ERRORS as exc:
            self._failed("purge", exc)
            return 0

    def link(self, tenant: str, request_id: str, entry_id: str, ttl_s: float) -> None:
        try:
            self._client.set(
                self._base(tenant) + "r:" + request_id, entry_id, px=max(1, round(ttl_s * 1000))
            )
        except _REDIS_ERRORS as exc:
            self._failed("write", exc)

    def linked(self, tenant: str, request_id: str) -> str | None:
        try:
            value = self._client.get(self._base(tenant) + "r:" + request_id)
        except _REDIS_ERRORS as exc:
            self._failed("read", exc)
            return None
        return value.decode() if isinstance(value, bytes) else None

    def close(self) -> None:
        self._client.close()
