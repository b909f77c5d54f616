"""The Litestar app: ``create_app`` takes its dependencies, so tests inject instead of patching."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.plugins import PluginProtocol
from litestar.plugins.core import MsgspecDIPlugin

from gateway.api.cache_admin import CACHE_ADMIN_ROUTES
from gateway.api.errors import (
    gateway_error_handler,
    http_exception_handler,
    unexpected_error_handler,
)
from gateway.api.handlers import ROUTES
from gateway.api.legacy import completions
from gateway.api.metrics import metrics
from gateway.api.reports import REPORT_ROUTES
from gateway.api.routing import ROUTING_ROUTES
from gateway.cache import build_cache_store
from gateway.config import LoadedConfig, load_config
from gateway.errors import GatewayError
from gateway.feedback import FeedbackStore
from gateway.ledger import Ledger, SqliteLedger
from gateway.pipeline.semantic import build_semantic_cache
from gateway.reconcile import settle_recorded_reservations
from gateway.reload import ConfigReloader
from gateway.runtime import build_runtime, needs_embedder
from gateway.service import Switchboard, build_budget_store, build_ledger_relay
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from gateway.tiers.base import Tier
from gateway.tokens import configure_offline_tiktoken

log = logging.getLogger("gateway")


def _announce(message: str) -> None:
    # Printed, not logged: a generated key must reach the operator once and never a log file.
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def build_switchboard(
    settings: Settings,
    *,
    loaded: LoadedConfig | None = None,
    ledger: Ledger | None = None,
    tiers: Mapping[str, Tier] | None = None,
    env: Mapping[str, str] | None = None,
    announce: Callable[[str], None] = _announce,
    telemetry: Telemetry | None = None,
) -> Switchboard:
    """Load the config, resolve keys and open the ledger: everything but the HTTP layer."""
    configure_offline_tiktoken()
    # Only a config read from a file can be reloaded (SIGHUP, file change).
    from_file = loaded is None
    loaded = loaded or load_config(settings.config_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    the_ledger: Ledger = ledger or SqliteLedger(settings.ledger_path)
    runtime = build_runtime(
        loaded,
        data_dir=settings.data_dir,
        ledger=the_ledger,
        env=os.environ if env is None else env,
        announce=announce,
        warn=log.warning,
        tiers=tiers,
    )
    # Load both tokenizers now, not on the event loop at the first request (~0.2 s each).
    for model in ("gpt-4", "gpt-4o"):
        runtime.tokens.count_text("warm up", model)
    if needs_embedder(loaded.config):
        # Imported here, not at module level: the embedder imports numpy (~15 MiB of resident
        # memory), and a config whose tenants use neither layer never embeds.
        from gateway.embedder import default_embedder

        default_embedder()  # approved answers and the semantic cache embed text (~0.2 s to load)
    if telemetry is None:
        cfg = loaded.config.telemetry
        # Nothing would read spans or metrics: skip the ~25 µs per request.
        if cfg.prometheus or cfg.otlp_endpoint:
            telemetry = Telemetry.from_config(cfg)
    board = Switchboard(
        runtime,
        telemetry=telemetry,
        cache_store=build_cache_store(loaded.config, settings.data_dir),
        feedback=(FeedbackStore(the_ledger.path) if isinstance(the_ledger, SqliteLedger) else None),
        # Once per process, kept across config reloads (state and redis are bound at start).
        budget_store=build_budget_store(loaded.config, settings.data_dir),
        semantic_cache=build_semantic_cache(
            loaded.config, settings.data_dir, os.environ if env is None else env
        ),
    )
    if loaded.config.state == "redis" and isinstance(the_ledger, SqliteLedger):
        # Every process's records reach the shared Redis stream (`gateway ledger pull`).
        board.ledger_relay = build_ledger_relay(loaded.config, the_ledger.path)
    if from_file:
        board.reloader = ConfigReloader(
            board, settings.config_path, data_dir=settings.data_dir, env=env, announce=announce
        )
    return board


class _GatewayApp(Litestar):
    """Litestar without its pydantic and attrs plugins: the gateway's handlers use msgspec and
    plain types only, and Litestar adds those plugins whenever the packages are installed
    (pydantic is, for the openai client): importing them costs 6.7 MiB of resident memory and
    0.2 s of start-up for nothing."""

    @staticmethod
    def _get_default_plugins(plugins: list[PluginProtocol]) -> list[PluginProtocol]:
        plugins.append(MsgspecDIPlugin())
        return plugins


def create_app(settings: Settings, *, switchboard: Switchboard | None = None) -> Litestar:
    board = switchboard or build_switchboard(settings)
    server = board.runtime.config.server

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        for tier in board.runtime.tiers.values():
            warm_up = getattr(tier, "warm_up", None)  # in-process models load before "ready"
            if warm_up is not None:
                try:
                    await warm_up()
                except Exception as exc:  # noqa: BLE001 - the tier reports it per request
                    log.warning("the %s tier could not load its model: %s", tier.name, exc)
        watcher: asyncio.Task[None] | None = None
        reloader = board.reloader
        if reloader is not None:
            reloader.install_sighup()
            if server.watch_config:
                watcher = asyncio.create_task(reloader.watch(server.watch_interval_s))
        ledger = board.runtime.ledger
        if board.budget_store is not None and isinstance(ledger, SqliteLedger):
            # A process killed between its ledger commit and its budget settle (kill -9).
            await settle_recorded_reservations(board.budget_store, ledger)
        # Releases reservations whose process died before settling them.
        board.start_budget_reaper()
        # Other processes' semantic-cache entries (Redis, or sibling workers) reach this index.
        board.start_semantic_refresh()
        if board.ledger_relay is not None:
            board.ledger_relay.start()
        board.ready = True
        try:
            yield
        finally:
            board.ready = False
            if watcher is not None:
                watcher.cancel()
            await board.aclose()

    cors = None
    if server.cors_origins:
        cors = CORSConfig(
            allow_origins=list(server.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "x-switchboard-cache",
                "x-switchboard-cache-reason",
                "x-switchboard-fallback",
                "x-switchboard-route",
                "x-switchboard-model",
                "x-switchboard-reason",
                "x-switchboard-cost-usd",
                "x-switchboard-request-id",
                "x-switchboard-budget-warning",
                "x-switchboard-handoff",
                "x-switchboard-masked",
                "x-switchboard-cascade",
                "x-switchboard-confidence",
                "x-switchboard-cache-layer",
                "x-switchboard-intent",
                "x-switchboard-similarity",
                "x-switchboard-placeholders",
                "x-switchboard-answers",
                "x-switchboard-semantic-cache",
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
                "retry-after",
            ],
        )
    app = _GatewayApp(
        route_handlers=[
            *ROUTES,
            *ROUTING_ROUTES,
            completions,
            metrics,
            *REPORT_ROUTES,
            *CACHE_ADMIN_ROUTES,
        ],
        lifespan=[lifespan],
        cors_config=cors,
        request_max_body_size=server.body_limit_bytes,
        exception_handlers={
            GatewayError: gateway_error_handler,
            HTTPException: http_exception_handler,
            Exception: unexpected_error_handler,
        },
        openapi_config=OpenAPIConfig(title="Switchboard", version="0.1.0", path="/schema"),
        logging_config=None,
    )
    app.state.switchboard = board
    return app
