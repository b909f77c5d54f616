"""The semantic response cache: answers reused across requests that mean the same.

- ``cache``: :class:`SemanticCache` (lookup, store, invalidate, purge) and its per-tenant
  :class:`SemanticPolicy`;
- ``guards``: what must be equal besides meaning (entities by keyed hash, negation, direction,
  minimal pairs);
- ``index``: the in-process brute-force cosine index;
- ``store``: :class:`SemanticStore` and its backends (memory, diskcache, Redis);
- ``commands``: ``gateway cache replay`` and ``gateway cache match``.
"""

from gateway.cache.semantic.cache import Lookup, SemanticCache, SemanticHit, SemanticPolicy
from gateway.cache.semantic.store import (
    DiskSemanticStore,
    MemorySemanticStore,
    RedisSemanticStore,
    SemanticEntry,
    SemanticStore,
)

__all__ = [
    "DiskSemanticStore",
    "Lookup",
    "MemorySemanticStore",
    "RedisSemanticStore",
    "SemanticCache",
    "SemanticEntry",
    "SemanticHit",
    "SemanticPolicy",
    "SemanticStore",
]
