"""``gateway serve --workers N``: several processes answering on one port.

One Python process is one event loop: past about one core of work per request stream, more
requests only queue. With ``--workers N`` the parent binds the port once and uvicorn's
supervisor spawns N worker processes that accept on that same socket (the kernel hands each new
connection to one of them), restarts a worker that dies, and on SIGHUP restarts them all (a
config reload). Each worker builds its own app from the environment (:func:`app_from_env`).

What the processes share, and why that is safe:

- the ledger (``ledger.sqlite3``): SQLite in WAL mode, one writer thread per process, a busy
  timeout for the other processes' locks; the parent runs the migrations once before any worker
  starts, so workers never race to migrate;
- the response cache (diskcache, SQLite underneath) and the embedded budget store (SQLite in WAL
  mode): both made for several processes on one host; the parent creates them once, too;
- generated API keys: the parent resolves the keys (and generates and announces those marked
  ``generate_if_unset``) once; the workers then find the stored digests and announce nothing.

Per process: the admission memory of the cache, the rate windows' local view (the store is
shared), Prometheus metrics (each ``/metrics`` scrape sees one worker), and a masking tenant's
random hash key when ``secret_env`` is unset (set it, or cached masked answers are per worker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from litestar import Litestar

from gateway.settings import Settings

__all__ = ["app_from_env", "prepare_shared_state", "serve_workers"]

log = logging.getLogger("gateway")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _announce(message: str) -> None:
    # Printed, not logged: a generated key must reach the operator once and never a log file.
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def prepare_shared_state(settings: Settings) -> None:
    """Everything the workers share, done once in the parent before they start: load and check
    the config (fail fast), resolve and generate keys, migrate the ledger, create the cache and
    budget files. Raises what ``create_app`` raises (ConfigError, LedgerError, OSError, ...)."""
    from gateway.cache import build_cache_store
    from gateway.config import load_config
    from gateway.keys import build_keyring
    from gateway.ledger import SqliteLedger
    from gateway.service import build_budget_store

    loaded = load_config(settings.config_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    build_keyring(
        loaded.config,
        data_dir=settings.data_dir,
        env=os.environ,
        announce=_announce,
        warn=log.warning,
    )
    SqliteLedger(settings.ledger_path).close()

    async def create_and_close() -> None:
        cache = build_cache_store(loaded.config, settings.data_dir)
        if cache is not None:
            await cache.aclose()
        budget = build_budget_store(loaded.config, settings.data_dir)
        if budget is not None:
            await budget.aclose()

    asyncio.run(create_and_close())


def app_from_env() -> Litestar:
    """The app of one worker: settings from the environment the parent set (uvicorn factory)."""
    from gateway.app import create_app
    from gateway.serving_gc import tune_gc_for_serving

    app = create_app(Settings.from_env())
    tune_gc_for_serving()
    return app


def logging_config(level: str) -> dict[str, Any]:
    """The parent's log format and level for every worker (workers are spawned, not forked, so
    they do not inherit the parent's handlers)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def serve_workers(settings: Settings, workers: int, log_level: str) -> None:
    """Run ``workers`` processes on ``settings.host:port`` until SIGINT / SIGTERM."""
    import uvicorn

    # Workers read their settings from the environment they inherit.
    os.environ["SWITCHBOARD_CONFIG"] = str(settings.config_path.resolve())
    os.environ["SWITCHBOARD_DATA_DIR"] = str(settings.data_dir.resolve())
    os.environ["SWITCHBOARD_HOST"] = settings.host
    os.environ["SWITCHBOARD_PORT"] = str(settings.port)
    uvicorn.run(
        "gateway.workers:app_from_env",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        log_config=logging_config(log_level),
        timeout_graceful_shutdown=30,
    )
