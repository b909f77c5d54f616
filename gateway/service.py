"""The gateway as the HTTP layer sees it: the current runtime and the pipeline to run on it.

The ``Switchboard`` also owns what outlives a config reload: the cache store, the semantic cache
(with its index refresh task), the feedback store and the budget store
(with its reaper task). ``state`` and ``redis`` are bound at start, so the
budget store's kind never changes; a reload that gives a tenant its first budget opens it then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from gateway.budget import BudgetStore, SqliteBudgetStore, reap_periodically
from gateway.cache.stage import CacheStage
from gateway.cache.store import CacheStore
from gateway.config import GatewayConfig
from gateway.feedback import FeedbackStore
from gateway.pipeline.context import RequestContext
from gateway.pipeline.core import Pipeline
from gateway.pipeline.semantic import (
    build_semantic_cache,
    refresh_periodically,
    tenant_policies,
)
from gateway.pipeline.stages import default_stages
from gateway.request_ids import new_request_id
from gateway.runtime import Runtime, RuntimeHolder
from gateway.settings import BUDGET_FILE
from gateway.telemetry import ObserveStage, Telemetry

if TYPE_CHECKING:
    # Only annotations here: the semantic cache imports numpy (~15 MiB of resident memory), and
    # ledger_stream the redis package (~6 MiB), which only state: redis needs.
    from gateway.cache.semantic import SemanticCache
    from gateway.ledger_stream import LedgerRelay
    from gateway.reload import ConfigReloader

log = logging.getLogger("gateway")

# How often each process releases reservations past their TTL (see docs/budgets.md).
REAP_INTERVAL_S = 30.0


def needs_budget_store(config: GatewayConfig) -> bool:
    """Whether any tenant has a budget or rate limits (else no store is opened at all)."""
    return any(t.budget is not None or t.rate_limits is not None for t in config.tenants.values())


def build_budget_store(config: GatewayConfig, data_dir: Path) -> BudgetStore | None:
    """The budget store the config asks for, or None when no tenant is limited.

    ``state: embedded``: SQLite at ``data_dir/budget.sqlite3`` (shared by the processes of one
    host). ``state: redis``: ``redis.url`` under ``redis.key_prefix`` (shared by every host).
    Opening does not connect to Redis: a server that is down shows per request, as
    ``on_backend_error`` says.
    """
    if not needs_budget_store(config):
        return None
    if config.state == "redis":
        # Imported only for state: redis: the redis package costs ~6 MiB of resident memory.
        from gateway.budget.redis_store import RedisBudgetStore

        # 2 s, not the store's 0.5 s default: a loaded event loop (a burst of requests) can lag
        # that long, and one timeout makes the store refuse every request for a second.
        return RedisBudgetStore(config.redis.url, config.redis.key_prefix, timeout_s=2.0)
    return SqliteBudgetStore(data_dir / BUDGET_FILE)


class Switchboard:
    def __init__(
        self,
        runtime: Runtime,
        pipeline: Pipeline | None = None,
        telemetry: Telemetry | None = None,
        cache_store: CacheStore | None = None,
        feedback: FeedbackStore | None = None,
        budget_store: BudgetStore | None = None,
        semantic_cache: SemanticCache | None = None,
    ) -> None:
        self.runtimes = RuntimeHolder(runtime)
        # The semantic response cache; None until a tenant enables it.
        self.semantic = semantic_cache
        self._semantic_refresh: asyncio.Task[None] | None = None
        self._configure_semantic(runtime)
        # Budget counters and rate windows; None until a tenant has a budget or rate limits.
        self.budget_store = budget_store
        self._reaper: asyncio.Task[None] | None = None
        self._reaping = False
        self.feedback = feedback
        # Set when the config came from a file: reloads it on SIGHUP or change.
        self.reloader: ConfigReloader | None = None
        # With state: redis, copies this process's ledger records to the shared stream.
        self.ledger_relay: LedgerRelay | None = None
        self.telemetry = telemetry
        self.cache_store = cache_store
        stages = default_stages(
            cache_store,
            budget_store=lambda: self.budget_store,
            semantic_cache=lambda: self.semantic,
        )
        if telemetry is not None:
            # First, so its exit runs last and sees the final status and cost.
            stages = [ObserveStage(telemetry), *stages]
        self.pipeline = pipeline or Pipeline(stages)
        self.ready = False

    @property
    def runtime(self) -> Runtime:
        return self.runtimes.current

    def new_context(
        self, headers: Mapping[str, str], read_body: Callable[[], Awaitable[bytes]]
    ) -> RequestContext:
        return RequestContext(
            runtime=self.runtimes.current,
            request_id=new_request_id(),
            headers=headers,
            read_body=read_body,
        )

    def swap_runtime(self, runtime: Runtime) -> Runtime:
        """Make ``runtime`` current (a config reload); returns the old one."""
        self._configure_semantic(runtime)
        return self.runtimes.swap(runtime)

    def _configure_semantic(self, runtime: Runtime) -> None:
        if self.semantic is not None:
            self.semantic.configure(tenant_policies(runtime.config), runtime.semantic_secrets)

    async def ensure_semantic_cache(self, config: GatewayConfig, data_dir: Path) -> None:
        """Open the semantic cache if ``config`` needs one and none is open (a reload that
        enables it for a first tenant)."""
        if self.semantic is not None:
            return
        self.semantic = await anyio.to_thread.run_sync(build_semantic_cache, config, data_dir)
        if self.semantic is not None:
            log.warning("semantic cache opened for the reloaded config (%s)", config.state)
            self.start_semantic_refresh()

    def start_semantic_refresh(self) -> None:
        """Refresh each tenant's index from the store on a timer
        (``semantic_cache.refresh_interval_s``): other processes share it (Redis, or the
        workers of ``gateway serve --workers N`` on diskcache). The app's lifespan calls this."""
        cache = self.semantic
        if cache is None or self._semantic_refresh is not None:
            return
        self._semantic_refresh = asyncio.create_task(
            refresh_periodically(
                cache, lambda: self.runtime.config.semantic_cache.refresh_interval_s
            ),
            name="semantic-cache-refresh",
        )

    async def purge_tenant(self, tenant: str) -> int:
        """Remove every semantic-cache entry of ``tenant`` (an admin asked); how many there
        were."""
        if self.semantic is None:
            return 0
        return await anyio.to_thread.run_sync(self.semantic.purge, tenant)

    async def purge_exact(self, tenant: str) -> bool:
        """Make every exact-cache entry of ``tenant`` unreachable; False: no exact cache."""
        for stage in self.pipeline.stages:
            if isinstance(stage, CacheStage):
                await stage.purge(tenant)
                return True
        return False

    def start_budget_reaper(self, interval_s: float = REAP_INTERVAL_S) -> None:
        """Release expired reservations periodically (the app's lifespan calls this)."""
        self._reaping = True
        if self.budget_store is not None and self._reaper is None:
            self._reaper = asyncio.create_task(
                reap_periodically(self.budget_store, interval_s), name="budget-reaper"
            )

    async def ensure_budget_store(self, config: GatewayConfig, data_dir: Path) -> None:
        """Open the budget store if ``config`` needs one and none is open (a reload that adds
        the first budget or rate limit)."""
        if self.budget_store is not None or not needs_budget_store(config):
            return
        # SQLite opens (and migrates) in a thread: keep that off the event loop.
        self.budget_store = await anyio.to_thread.run_sync(build_budget_store, config, data_dir)
        log.warning("budget store opened for the reloaded config (%s)", config.state)
        if self._reaping:
            self.start_budget_reaper()

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
            self._reaper = None
        if self.budget_store is not None:
            await self.budget_store.aclose()
        if self._semantic_refresh is not None:
            self._semantic_refresh.cancel()
            try:
                await self._semantic_refresh
            except asyncio.CancelledError:
                pass
            self._semantic_refresh = None
        if self.semantic is not None:
            await anyio.to_thread.run_sync(self.semantic.backend.close)
            close_embedder = getattr(self.semantic.embedder_if_loaded, "close", None)
            if close_embedder is not None:  # a remote embedder's HTTP connections
                await anyio.to_thread.run_sync(close_embedder)
        for tier in self.runtime.tiers.values():
            await tier.aclose()
        if self.runtime.embeddings is not None:
            await self.runtime.embeddings.aclose()
        if self.cache_store is not None:
            await self.cache_store.aclose()
        self.runtime.ledger.close()
        if self.ledger_relay is not None:
            # After the ledger's last write: relay what is left while Redis still answers.
            await anyio.to_thread.run_sync(self.ledger_relay.stop)
        if self.feedback is not None:
            self.feedback.close()
        if self.reloader is not None:
            await self.reloader.aclose()
        if self.telemetry is not None:
            # Exporting blocks on the network (up to ~10 s when a collector is down).
            await anyio.to_thread.run_sync(self.telemetry.shutdown)


def build_ledger_relay(config: GatewayConfig, ledger_path: Path) -> LedgerRelay:
    # Imported here, for state: redis only: the redis package costs ~6 MiB of resident memory.
    import redis

    from gateway.ledger_stream import LedgerRelay

    client = redis.Redis.from_url(config.redis.url, socket_timeout=2, socket_connect_timeout=2)
    return LedgerRelay(ledger_path, client, config.redis.key_prefix)
