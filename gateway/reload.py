"""Config hot reload: on SIGHUP or when the config file changes, atomically.

The new file is loaded and checked in full, and a new ``Runtime`` built, before anything changes;
then it replaces the old one in one assignment (``RuntimeHolder.swap``), so a request sees either
the old config or the new one, never a mix. A file that fails to load is rejected with the reason
in the log and the old config keeps serving.

Tiers whose tier and upstream settings did not change are carried over as they are (an in-process
model is not reloaded, pooled connections stay open); replaced tiers are closed at shutdown,
since requests that started before the swap may still be using them. Tier health carries over.
What a reload cannot change (it is bound at start): ``state``, ``redis``, ``cache``,
``telemetry`` and ``server``; a change there is logged as needing a restart.

Tenants' approved answers are part of the config: their answers files and models are watched
with the config file, and reloaded with it. When a tenant's answers file (or its model)
changed, its cached answers (exact and semantic) are purged after the swap: answers cached from
a model before a person approved new text must not outlive the change.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from gateway.config import ConfigError, GatewayConfig, LoadedConfig, load_config
from gateway.runtime import Runtime, build_runtime, build_tier, needs_embedder
from gateway.service import Switchboard
from gateway.tiers.base import Tier

log = logging.getLogger("gateway.reload")

RESTART_ONLY: tuple[str, ...] = ("state", "redis", "cache", "telemetry", "server")


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    applied: bool
    message: str


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ConfigReloader:
    def __init__(
        self,
        board: Switchboard,
        config_path: Path,
        *,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        announce: Callable[[str], None] = log.warning,
    ) -> None:
        self.board = board
        self.config_path = config_path
        self.data_dir = data_dir
        self.env = os.environ if env is None else env
        self.announce = announce
        self.retired: list[Tier] = []
        self.reloads = 0
        self._lock = asyncio.Lock()
        self._digest = _digest(config_path)
        self._answers = _answers_digests(board.runtime.config)

    async def reload(self, why: str) -> ReloadOutcome:
        """Load, check and swap in the config file; the old config stays on any failure."""
        async with self._lock:
            self._digest = _digest(self.config_path)
            try:
                loaded = await anyio.to_thread.run_sync(self._load)
                runtime = await self._build(loaded)
                # A tenant's first budget or rate limit: open the store before it is needed.
                await self.board.ensure_budget_store(loaded.config, self.data_dir)
                await self.board.ensure_semantic_cache(loaded.config, self.data_dir)
            except ConfigError as exc:
                log.error("config reload (%s) rejected; the old config keeps serving: %s", why, exc)
                return ReloadOutcome(False, str(exc))
            except Exception as exc:  # noqa: BLE001 - a reload must never take the gateway down
                log.exception("config reload (%s) failed; the old config keeps serving", why)
                return ReloadOutcome(False, f"{type(exc).__name__}: {exc}")
            old = self.board.swap_runtime(runtime)
            await self._purge_changed_answers(runtime.config)
            self.retired.extend(t for n, t in old.tiers.items() if runtime.tiers.get(n) is not t)
            if old.embeddings is not None and old.embeddings is not runtime.embeddings:
                self.retired.append(old.embeddings)
            self.reloads += 1
            for section in _restart_only_changes(old.config, runtime.config):
                log.warning(
                    "config reload: `%s` changed but is bound at start; restart to apply it",
                    section,
                )
            message = f"config reloaded from {self.config_path} ({why})"
            log.warning(message)
            return ReloadOutcome(True, message)

    def _load(self) -> LoadedConfig:
        loaded = load_config(self.config_path, env=self.env)
        if needs_embedder(loaded.config):
            from gateway.embedder import default_embedder

            default_embedder()  # loaded here, in a thread, not at the first request
        return loaded

    async def _purge_changed_answers(self, config: GatewayConfig) -> None:
        before, self._answers = self._answers, _answers_digests(config)
        for tenant, digests in self._answers.items():
            if tenant in before and before[tenant] != digests:
                purged = await self.board.purge_tenant(tenant)
                await self.board.purge_exact(tenant)
                log.warning(
                    "config reload: the approved answers of %s changed; its exact-cache "
                    "entries and %d semantic-cache entries purged",
                    tenant,
                    purged,
                )

    async def _build(self, loaded: LoadedConfig) -> Runtime:
        old = self.board.runtime
        new_cfg, old_cfg = loaded.config, old.config
        tiers: dict[str, Tier] = {}
        for name, tier_cfg in new_cfg.tiers.configured().items():
            upstream = new_cfg.upstreams[tier_cfg.upstream]
            before = old_cfg.tiers.configured().get(name)
            if (
                before is not None
                and before == tier_cfg
                and old_cfg.upstreams.get(before.upstream) == upstream
                and name in old.tiers
            ):
                tiers[name] = old.tiers[name]
                continue
            tier = build_tier(name, tier_cfg, upstream, self.env)
            warm_up = getattr(tier, "warm_up", None)
            if warm_up is not None:
                await warm_up()  # load a new in-process model before requests can reach it
            tiers[name] = tier
        runtime = build_runtime(
            loaded,
            data_dir=self.data_dir,
            ledger=old.ledger,
            env=self.env,
            announce=self.announce,
            warn=log.warning,
            tiers=tiers,
            tokens=old.tokens,
            health=old.health,
        )
        if old.embeddings is not None and new_cfg.embeddings == old_cfg.embeddings:
            same_upstream = (
                new_cfg.embeddings is not None
                and new_cfg.upstreams.get(new_cfg.embeddings.upstream)
                == old_cfg.upstreams.get(new_cfg.embeddings.upstream)
            )
            if same_upstream:
                # Keep the open connection pool; the freshly built client was never used.
                fresh = runtime.embeddings
                runtime = replace(runtime, embeddings=old.embeddings)
                if fresh is not None:
                    await fresh.aclose()
        return runtime

    def changed(self) -> bool:
        if _digest(self.config_path) != self._digest:
            return True
        return _answers_digests(self.board.runtime.config) != self._answers

    async def watch(self, interval_s: float) -> None:
        """Reload whenever the file's content changes (checked every ``interval_s``)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.changed():
                await self.reload("file changed")

    def install_sighup(self) -> bool:
        """Reload on SIGHUP; False where signals cannot be handled (not the main thread)."""
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP"))
            )
        except (ValueError, RuntimeError, NotImplementedError):
            return False
        return True

    async def aclose(self) -> None:
        for tier in self.retired:
            await tier.aclose()
        self.retired.clear()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _answers_digests(
    config: GatewayConfig,
) -> dict[str, tuple[tuple[int, int] | None, tuple[int, int] | None]]:
    """Per tenant with approved answers: the modification time and size of its answers file and
    model (checked every watch interval: a model of megabytes is not hashed that often)."""
    return {
        tenant: (
            _stat(Path(tc.answers.file).expanduser()),
            _stat(Path(tc.answers.model).expanduser()),
        )
        for tenant, tc in config.tenants.items()
        if tc.answers is not None
    }


def _restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    return [s for s in RESTART_ONLY if getattr(old, s) != getattr(new, s)]
