"""The semantic cache's settings as the config holds them: ``semantic_cache:`` (defaults for
every tenant, and what is bound at start) and ``tenants.NAME.semantic_cache`` (the tenant's
opt-in and overrides). The cache itself is ``gateway.cache.semantic`` (docs/caching.md); the
policy a tenant gets is built by ``gateway.pipeline.semantic.tenant_policy``. (No import of the
cache here: ``gateway.config`` imports this module, and the cache package imports the config.)
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Share = Annotated[float, Meta(ge=0.0, le=1.0)]

# Entries per page of ``GET /admin/cache/{tenant}/semantic`` (``gateway.cache.semantic.admin``).
# Here so the HTTP layer checks it without importing the cache (numpy, ~15 MiB of resident
# memory) in a gateway whose tenants do not use the semantic cache.
MAX_ADMIN_PAGE = 500


class SemanticCacheConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``semantic_cache:``. ``enabled`` switches it off for every tenant; ``threshold`` ...
    ``personalised`` are the defaults of tenants that opt in; ``max_bytes`` bounds the diskcache
    store (``state: embedded``); ``refresh_interval_s``: how often a process re-reads the entries
    of the tenants it has seen, to serve what other processes sharing the store (Redis, or the
    workers of ``gateway serve --workers N``) stored. ``embedder``: ``wordllama`` (offline, in
    this process) or ``embeddings`` (the model of the ``embeddings:`` section, over HTTP, whose
    vectors have ``embedding_dim`` values); bound at start like the store."""

    enabled: bool = True
    threshold: Share = 0.85
    ttl_s: Annotated[float, Meta(gt=0)] = 86_400.0
    max_entries: Annotated[int, Meta(ge=1)] = 10_000
    multi_turn: bool = False
    personalised: bool = False
    max_bytes: Annotated[int, Meta(ge=1)] = 256 * 1024 * 1024
    refresh_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    embedder: Literal["wordllama", "embeddings"] = "wordllama"
    embedding_dim: Annotated[int, Meta(ge=1, le=65_536)] | None = None


class TenantSemanticConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``tenants.NAME.semantic_cache``: off unless ``enabled``; unset fields take the
    ``semantic_cache:`` defaults. ``secret_env``: the environment variable holding the key of
    the entity hashes the guard compares (unset: a random key per process, so entries that name
    an entity only match within the process that stored them)."""

    enabled: bool = False
    threshold: Share | None = None
    ttl_s: Annotated[float, Meta(gt=0)] | None = None
    max_entries: Annotated[int, Meta(ge=1)] | None = None
    multi_turn: bool | None = None
    personalised: bool | None = None
    secret_env: str | None = None

    def __post_init__(self) -> None:
        if self.secret_env is not None and not _ENV_NAME.fullmatch(self.secret_env):
            raise ValueError(
                f"secret_env {self.secret_env!r} is not an environment variable name; give the "
                "variable's name (e.g. SHOP_CACHE_SECRET), never the secret itself"
            )
