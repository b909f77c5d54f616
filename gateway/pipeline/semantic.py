"""The ``semantic`` stage: an earlier model answer to a request that means the same.

Per tenant with ``tenants.NAME.semantic_cache.enabled`` (docs/caching.md). After approved
answers and before the tier: the cache (``gateway.cache.semantic``) embeds the last user message
(masked, for a tenant that masks), takes the nearest entries of the tenant's index and serves the
first that reaches the tenant's threshold and passes every guard. On the way out it stores what a
tier answered (non-stream and stream, only a whole answer that finished with "stop"; masked),
in a worker thread.

Besides the earlier turns, an entry matches only a request with the same *scope*: the requested
model, the system prompt, and, for a masking tenant, the keyed hashes of the masked values (so
two customers' phone numbers, both ``[PHONE_1]`` in the masked text, never share an answer).
Personalised requests (an order number, an e-mail: checked on the unmasked text) are refused
unless the tenant's policy allows them; the entity guard then compares keyed hashes.

Headers on a hit: ``x-switchboard-route: cache``, ``x-switchboard-cache: hit``,
``x-switchboard-cache-layer: semantic``, ``x-switchboard-similarity`` (cosine, 3 decimals) and
the model that first gave the answer; otherwise ``x-switchboard-semantic-cache`` says why not
(``miss: below threshold (0.812 < 0.850)``, ``miss: guard: negation``, ``bypass: handoff``).
The request header ``x-switchboard-cache: no-cache`` / ``no-store`` applies as to the exact cache.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec

from gateway.cache.key import is_personalised_request
from gateway.cache.stage import (
    CACHE_HEADER,
    CACHE_LAYER_HEADER,
    CACHE_REASON_HEADER,
    CacheEntry,
    ReplayStream,
    encode_entry,
    entry_of,
)
from gateway.config import TIER_NAMES, GatewayConfig
from gateway.pipeline.answers import (
    CACHE_ROUTE,
    conversation,
    earlier_turns,
    request_directives,
    reuse_refusal,
)
from gateway.pipeline.context import RequestContext
from gateway.pipeline.headers import header_safe
from gateway.pipeline.masking import last_user_text
from gateway.tiers.base import Completion

if TYPE_CHECKING:
    # Not at run time: the cache, its index and the embedders import numpy (~15 MiB of resident
    # memory), which a gateway whose tenants do not use the semantic cache never needs. This
    # module is imported by every pipeline (SemanticStage); the functions that need the cache
    # import it when a tenant enables it.
    from gateway.cache.semantic import SemanticCache, SemanticPolicy
    from gateway.embedder import Embedder

log = logging.getLogger("gateway.pipeline")

SEMANTIC_HEADER = "x-switchboard-semantic-cache"
SIMILARITY_HEADER = "x-switchboard-similarity"

# The key of entity hashes for tenants that name no secret: random per process (see
# TenantSemanticConfig.secret_env).
_PROCESS_SECRET = os.urandom(32)

_decode_entry = msgspec.json.Decoder(CacheEntry).decode


class SemanticSecretMissing(ValueError):
    """A tenant names an environment variable for its semantic-cache secret that is not set."""


def tenant_policies(config: GatewayConfig) -> dict[str, SemanticPolicy]:
    """The policy of every tenant that opted in: its overrides on the ``semantic_cache:``
    defaults."""
    from gateway.cache.semantic import SemanticPolicy  # numpy: see the TYPE_CHECKING import

    base = config.semantic_cache
    out: dict[str, SemanticPolicy] = {}
    for tenant, tc in config.tenants.items():
        cfg = tc.semantic_cache
        if not cfg.enabled:
            continue
        out[tenant] = SemanticPolicy(
            threshold=base.threshold if cfg.threshold is None else cfg.threshold,
            ttl_s=base.ttl_s if cfg.ttl_s is None else cfg.ttl_s,
            max_entries=base.max_entries if cfg.max_entries is None else cfg.max_entries,
            multi_turn=base.multi_turn if cfg.multi_turn is None else cfg.multi_turn,
            personalised=base.personalised if cfg.personalised is None else cfg.personalised,
        )
    return out


def tenant_secrets(config: GatewayConfig, env: Mapping[str, str]) -> dict[str, bytes]:
    """The entity-hash key of every opted-in tenant that names one; raises
    :class:`SemanticSecretMissing` when a named variable is unset."""
    out: dict[str, bytes] = {}
    for tenant, tc in config.tenants.items():
        cfg = tc.semantic_cache
        if not cfg.enabled or cfg.secret_env is None:
            continue
        value = env.get(cfg.secret_env)
        if not value:
            raise SemanticSecretMissing(
                f"$.tenants.{tenant}.semantic_cache.secret_env: environment variable "
                f"{cfg.secret_env} is not set; set it to a long random string (e.g. "
                "`openssl rand -hex 32`), or remove `secret_env` for a per-process key"
            )
        out[tenant] = value.encode()
    return out


@dataclass(frozen=True, slots=True)
class SemanticQuery:
    """What a request is looked up and stored under."""

    tenant: str
    text: str
    history: tuple[str, ...]
    scope: tuple[str, ...]


def _query(ctx: RequestContext) -> SemanticQuery:
    assert ctx.request is not None and ctx.tenant is not None
    payload = conversation(ctx)
    messages = payload.get("messages")
    system = [
        str(m.get("content"))
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    scope = [f"model: {ctx.request.model}", *(f"system: {s}" for s in system)]
    if ctx.masking is not None:
        scope.extend(f"value: {p}={h}" for p, h in sorted(ctx.masking.value_hashes.items()))
    return SemanticQuery(
        tenant=ctx.tenant,
        text=last_user_text(payload),
        history=tuple(earlier_turns(payload)),
        scope=tuple(scope),
    )


class SemanticStage:
    name = "semantic"

    def __init__(self, cache: Callable[[], SemanticCache | None]) -> None:
        # A callable: the cache is opened by the first config that enables it (maybe a reload).
        self._cache = cache

    def _active(self, ctx: RequestContext) -> SemanticCache | None:
        assert ctx.tenant is not None
        cache = self._cache()
        if cache is None or not ctx.runtime.config.semantic_cache.enabled:
            return None
        if not ctx.runtime.tenant(ctx.tenant).semantic_cache.enabled:
            return None
        return cache

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.request is not None and ctx.tenant is not None
        cache = self._active(ctx)
        if cache is None:
            return
        headers = ctx.response_headers
        refused = reuse_refusal(ctx)
        if (
            refused is None
            and not cache.policy(ctx.tenant).personalised
            and is_personalised_request(ctx.payload)  # the customer's own words, not masked
        ):
            refused = "personalised"
        if refused is not None:
            headers[SEMANTIC_HEADER] = header_safe(f"bypass: {refused}")
            return
        query = _query(ctx)
        directives = request_directives(ctx)
        if "no-store" not in directives:
            ctx.semantic = query
        if "no-cache" in directives:
            headers[SEMANTIC_HEADER] = "bypass: no-cache"
            return
        # An active cache imported the embedders already: this is a sys.modules look-up (not at
        # module level: numpy, see the TYPE_CHECKING import).
        from gateway.remote_embedder import EmbedderFailed

        # Embedding, the index and (with Redis) the store's round trip: off the event loop.
        try:
            found = await anyio.to_thread.run_sync(
                partial(
                    cache.lookup,
                    query.tenant,
                    query.text,
                    history=query.history,
                    scope=query.scope,
                    request_id=ctx.request_id,
                )
            )
        except EmbedderFailed as exc:  # a remote embedding model is down: a miss, not a failure
            log.warning("request %s: semantic cache lookup skipped: %s", ctx.request_id, exc)
            ctx.semantic = None  # storing would need the same embedder
            headers[SEMANTIC_HEADER] = "miss: embedder unavailable"
            return
        entry = _read(found.hit.answer) if found.hit is not None else None
        if found.hit is None or entry is None:
            headers[SEMANTIC_HEADER] = header_safe(f"miss: {found.reason}")
            return
        self._answer(ctx, entry, found.hit.score)

    @staticmethod
    def _answer(ctx: RequestContext, entry: CacheEntry, score: float) -> None:
        assert ctx.request is not None
        ctx.semantic = None  # stored already
        ctx.served_by = CACHE_ROUTE
        ctx.cache_layer = "semantic"
        if ctx.masking is not None:
            ctx.masking.answer_masked = True  # stored masked: the mask stage restores it
        ctx.model = entry.model
        ctx.usage = entry.usage  # the tokens this hit saved
        headers = ctx.response_headers
        headers.update(
            {
                "x-switchboard-route": CACHE_ROUTE,
                "x-switchboard-model": entry.model,
                "x-switchboard-reason": f"semantic cache hit ({score:.3f})",
                CACHE_HEADER: "hit",
                CACHE_LAYER_HEADER: "semantic",
                SIMILARITY_HEADER: f"{score:.3f}",
            }
        )
        headers.pop(CACHE_REASON_HEADER, None)
        headers.pop(SEMANTIC_HEADER, None)
        chunk_id = f"chatcmpl-{ctx.request_id}"
        created = int(time.time())
        if ctx.request.wants_stream:
            ctx.stream = ReplayStream(
                chunk_id=chunk_id,
                created=created,
                model=entry.model,
                pieces=[entry.text],
                usage=entry.usage,
            )
            return
        body = entry.body
        body["id"] = chunk_id
        body["created"] = created
        ctx.completion = Completion(body=body, model=entry.model, usage=entry.usage)

    async def exit(self, ctx: RequestContext) -> None:
        query = ctx.semantic
        if query is None or ctx.served_by not in TIER_NAMES:
            return
        if ctx.status != 200 or ctx.error is not None:
            return  # failed, or the client left mid-stream: not a whole answer
        cache = self._cache()
        entry = entry_of(ctx)
        if cache is None or entry is None:
            return
        try:
            await anyio.to_thread.run_sync(
                partial(
                    cache.store,
                    query.tenant,
                    query.text,
                    encode_entry(entry),
                    history=query.history,
                    scope=query.scope,
                    request_id=ctx.request_id,
                )
            )
        except Exception:  # noqa: BLE001 - the answer is out; a cache that cannot store is a miss
            log.exception("request %s: could not store in the semantic cache", ctx.request_id)


def _read(raw: bytes) -> CacheEntry | None:
    try:
        entry = _decode_entry(raw)
    except msgspec.DecodeError:
        log.warning("unreadable semantic cache entry; treating it as a miss")
        return None
    return entry if entry.text else None


SEMANTIC_DIR = "semantic-cache"


def needs_semantic_cache(config: GatewayConfig) -> bool:
    """Whether any tenant uses the semantic cache (else none is opened at all)."""
    return config.semantic_cache.enabled and any(
        tc.semantic_cache.enabled for tc in config.tenants.values()
    )


def build_embedder(config: GatewayConfig, env: Mapping[str, str]) -> Embedder | None:
    """The embedder ``semantic_cache.embedder`` names: None for the offline default (loaded
    lazily by the cache), else an :class:`HttpEmbedder` on the ``embeddings:`` model."""
    if config.semantic_cache.embedder == "wordllama":
        return None
    from gateway.remote_embedder import HttpEmbedder

    emb, dim = config.embeddings, config.semantic_cache.embedding_dim
    assert emb is not None and dim is not None  # checked when the config was loaded
    upstream = config.upstreams[emb.upstream]
    assert upstream.base_url is not None
    return HttpEmbedder(
        base_url=upstream.base_url,
        model=emb.model,
        dim=dim,
        api_key=env.get(upstream.api_key_env) if upstream.api_key_env else None,
        headers=upstream.headers,
        connect_timeout_s=upstream.connect_timeout_s,
        read_timeout_s=upstream.read_timeout_s,
    )


def _namespace(embedder: Embedder | None) -> str:
    """Entries made by another embedding model are never compared: each model but the default
    keeps its own directory / key prefix (the default keeps the names it always had)."""
    if embedder is None:
        return ""
    return "-" + "".join(c if c.isalnum() else "_" for c in embedder.name)


def build_semantic_cache(
    config: GatewayConfig, data_dir: Path, env: Mapping[str, str] | None = None
) -> SemanticCache | None:
    """The cache the config asks for, or None when no tenant uses it.

    ``state: embedded``: diskcache in ``data_dir / "semantic-cache"``, bounded by
    ``semantic_cache.max_bytes``. ``state: redis``: the shared Redis (``redis.url``, under
    ``redis.key_prefix``), so every process serves what any stored. Policies and tenant keys are
    set by :meth:`SemanticCache.configure` from each runtime.
    """
    if not needs_semantic_cache(config):
        return None
    # Imported only now that a tenant uses the cache: it imports numpy (~15 MiB of resident
    # memory), see the TYPE_CHECKING import.
    from gateway.cache.semantic import (
        DiskSemanticStore,
        RedisSemanticStore,
        SemanticCache,
        SemanticStore,
    )

    embedder = build_embedder(config, os.environ if env is None else env)
    namespace = _namespace(embedder)
    store: SemanticStore
    if config.state == "redis":
        prefix = config.redis.key_prefix + (f"{namespace[1:]}:" if namespace else "")
        store = RedisSemanticStore(config.redis.url, prefix)
    else:
        directory = data_dir / (SEMANTIC_DIR + namespace)
        store = DiskSemanticStore(directory, config.semantic_cache.max_bytes)
    return SemanticCache(
        store, secret=_PROCESS_SECRET, policies=tenant_policies(config), embedder=embedder
    )


async def refresh_periodically(cache: SemanticCache, interval_s: Callable[[], float]) -> None:
    """With a store shared by several processes: re-read the entries of every tenant this
    process has indexed, so it serves what the others stored (and forgets what they removed)."""
    while True:
        await asyncio.sleep(interval_s())
        for tenant in cache.tenants():
            try:
                await anyio.to_thread.run_sync(cache.refresh, tenant)
            except Exception:  # noqa: BLE001 - a failed refresh keeps the old index; try again
                log.exception("could not refresh the semantic cache index of %s", tenant)
