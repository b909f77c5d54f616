"""The ``gateway`` command: serve, keys create, report, config check, and the routing commands
train-router, eval-router, classify and calibrate (``gateway/routing/commands.py``), and the
safeguard commands mask and handoff (``gateway/safety/commands.py``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import ConfigError, load_config
from gateway.settings import Settings, default_data_dir

if TYPE_CHECKING:
    from gateway.answers.matcher import ApprovedAnswers
    from gateway.config import GatewayConfig, TenantConfig
    from gateway.reports import BudgetLookup, LocalCurrency

# Commands defined in this file. For them, main() builds the parser without the command modules
# (routing, safety, answers, cache): their imports cost ``gateway serve`` start-up time for
# nothing. Any other first argument (or none, or --help) gets the full parser.
CORE_COMMANDS = frozenset({"serve", "keys", "report", "ledger", "config"})

DATA_DIR_HELP = "state directory (default $SWITCHBOARD_DATA_DIR, else ~/.local/share/switchboard)"


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _zone_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="read tenants' time zones from this config (default: as for serve)"
    )
    parser.add_argument(
        "--tz", metavar="ZONE", help="put every tenant in this IANA time zone (skip the config)"
    )


def _parser(*, extensions: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Switchboard: a cost-aware, OpenAI-compatible model gateway.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config", help="routing config (default: config/gateway.yaml, or $SWITCHBOARD_CONFIG)"
    )
    serve.add_argument("--host", help="listen address (default 127.0.0.1, or $SWITCHBOARD_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8080, or $SWITCHBOARD_PORT)")
    serve.add_argument(
        "--data-dir",
        help="state directory (default: $SWITCHBOARD_DATA_DIR, else ~/.local/share/switchboard)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default 1; see docs/architecture.md)",
    )

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create", help="make a new key; prints it once with its config line"
    )
    create.add_argument("--tenant", required=True, help="tenant the key is for")

    report = sub.add_parser("report", help="spend report from the ledger (table, CSV, JSON, HTML)")
    report.add_argument("--tenant", help="only this tenant")
    report.add_argument(
        "--since",
        "--from",
        dest="since",
        help="from this day (YYYY-MM-DD, in the tenant's time zone) or ISO time, inclusive",
    )
    report.add_argument(
        "--until",
        "--to",
        dest="until",
        help="up to and including this day (YYYY-MM-DD, tenant's time zone) or up to an ISO time",
    )
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument(
        "--group-by",
        default="tenant,route,model",
        help="comma-separated: day, month, model, tier (or route), user, tenant, status_class",
    )
    report.add_argument(
        "--html", metavar="FILE", help="write the HTML report (charts) to FILE instead"
    )
    _zone_arguments(report)
    report.add_argument("--data-dir", help=DATA_DIR_HELP)

    ledger = sub.add_parser("ledger", help="export, prune and pull the spend ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    export = ledger_sub.add_parser("export", help="one tenant's raw records as CSV or JSONL")
    export.add_argument("--tenant", required=True, help="the tenant to export")
    export.add_argument("--from", dest="since", help="from this day (YYYY-MM-DD) or ISO time")
    export.add_argument("--to", dest="until", help="up to and including this day, or an ISO time")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--output", metavar="FILE", help="write to FILE (default: stdout)")
    _zone_arguments(export)
    export.add_argument("--data-dir", help=DATA_DIR_HELP)
    prune = ledger_sub.add_parser(
        "prune", help="roll raw records older than N days up into daily aggregates, then delete"
    )
    prune.add_argument(
        "--keep-days", type=int, required=True, metavar="N", help="keep N days of raw records"
    )
    _zone_arguments(prune)
    prune.add_argument("--data-dir", help=DATA_DIR_HELP)
    pull = ledger_sub.add_parser(
        "pull",
        help="with state: redis, store every gateway process's records from the Redis ledger "
        "stream in this data directory's ledger",
    )
    pull.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="the gateways' redis.url (default redis://127.0.0.1:6379/0)",
    )
    pull.add_argument("--key-prefix", default="switchboard:", help="the gateways' redis.key_prefix")
    pull.add_argument(
        "--keep", action="store_true", help="leave the stored records in the stream (no trim)"
    )
    pull.add_argument(
        "--follow",
        type=float,
        metavar="SECONDS",
        help="keep pulling every SECONDS until interrupted",
    )
    pull.add_argument("--data-dir", help=DATA_DIR_HELP + "; created if missing")

    config = sub.add_parser("config", help="config files")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("path", help="the YAML file to check")
    if extensions:
        from gateway.answers.commands import add_answers_commands
        from gateway.cache.semantic.commands import add_cache_commands
        from gateway.routing.commands import add_routing_commands
        from gateway.safety.commands import add_safety_commands

        add_routing_commands(sub)
        add_safety_commands(sub)
        add_answers_commands(sub)
        add_cache_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    core = bool(given) and given[0] in CORE_COMMANDS
    args = _parser(extensions=not core).parse_args(given)
    if args.command == "serve":
        return _serve(args)
    if args.command == "keys":
        return _keys_create(args.tenant)
    if args.command == "report":
        return _report(args)
    if args.command == "ledger":
        return _ledger(args)
    if args.command == "config":
        return _config_check(Path(args.path))
    from gateway.answers.commands import run_answers_command
    from gateway.cache.semantic.commands import run_cache_command
    from gateway.routing.commands import run_routing_command
    from gateway.safety.commands import run_safety_command

    routed = run_routing_command(args)
    if routed is not None:
        return routed
    for run in (run_answers_command, run_cache_command):
        status = run(args)
        if status is not None:
            return status
    safety = run_safety_command(args)
    if safety is not None:
        return safety
    return _config_check(Path(args.path))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.ledger import LedgerError

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.workers < 1:
        _err(f"gateway: --workers must be 1 or more, got {args.workers}")
        return 2
    try:
        settings = Settings.from_env(
            config_path=args.config, data_dir=args.data_dir, host=args.host, port=args.port
        )
        if args.workers > 1:
            from gateway.workers import prepare_shared_state

            prepare_shared_state(settings)
        else:
            app = create_app(settings)
    except (ConfigError, LedgerError, OSError, ValueError) as exc:
        _err(f"gateway: {exc}")
        return 2
    _err(
        f"Switchboard on http://{settings.host}:{settings.port}/v1 "
        f"(config {settings.config_path}, data {settings.data_dir}"
        + (f", {args.workers} workers)" if args.workers > 1 else ")")
    )
    if args.workers > 1:
        from gateway.workers import serve_workers

        serve_workers(settings, args.workers, args.log_level)
        return 0
    from gateway.serving_gc import tune_gc_for_serving

    tune_gc_for_serving()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
    return 0


def _keys_create(tenant: str) -> int:
    from gateway.keys import hash_key, new_key

    key = new_key()
    today = datetime.now(UTC).date().isoformat()
    _out("New API key (shown once; store it now):")
    _out(f"    {key}")
    _out("")
    _out(f"Add this line under tenants.{tenant}.keys in your config:")
    _out(f"      - sha256: {hash_key(key)}  # created {today}")
    return 0


def _ledger_path(args: argparse.Namespace) -> Path | None:
    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
    path = data_dir / "ledger.sqlite3"
    if not path.exists():
        _err(
            f"gateway: no ledger at {path}; start the gateway first, or pass --data-dir "
            f"(default {default_data_dir({})} or $SWITCHBOARD_DATA_DIR)"
        )
        return None
    return path


def _report(args: argparse.Namespace) -> int:
    from gateway.ledger import LedgerError, SqliteLedger
    from gateway.report_html import build_html_report
    from gateway.reports import (
        SpendQuery,
        build_spend_report,
        parse_group_by,
        render_spend_csv,
        render_spend_json,
        render_spend_table,
    )
    from gateway.timezones import parse_bound, zone, zones_for

    path = _ledger_path(args)
    if path is None:
        return 2
    try:
        zones = zones_for(args.tz, args.config)
        tz = zone(zones.name_of(args.tenant) if args.tenant else zones.default)
        since = parse_bound(args.since, tz, param="--since") if args.since else None
        until = parse_bound(args.until, tz, end=True, param="--until") if args.until else None
        group_by = parse_group_by(args.group_by)
        query = SpendQuery(tenant=args.tenant, since=since, until=until, group_by=group_by)
        budgets = _cli_budgets(args, path.parent)
        ledger = SqliteLedger(path)
        try:
            if args.html:
                page = build_html_report(ledger, args.tenant, since, until, zones, budgets=budgets)
            else:
                report = build_spend_report(
                    ledger, query, zones, budgets=budgets, local=_cli_currency(args)
                )
        finally:
            ledger.close()
        if args.html:
            Path(args.html).write_text(page, encoding="utf-8")
    except (LedgerError, OSError, ValueError) as exc:
        _err(f"gateway: {exc}")
        return 2
    if args.html:
        _err(f"gateway: wrote the HTML report to {args.html}")
        return 0
    render = {"table": render_spend_table, "csv": render_spend_csv, "json": render_spend_json}
    sys.stdout.write(render[args.format](report).rstrip("\n") + "\n")
    return 0


def _cli_tenant_config(args: argparse.Namespace) -> TenantConfig | None:
    """The tenant's config for ``gateway report --tenant T`` (None without one or with --tz)."""
    from gateway.settings import DEFAULT_CONFIG

    if not args.tenant or args.tz:
        return None
    explicit = args.config or os.environ.get("SWITCHBOARD_CONFIG")
    try:
        loaded = load_config(Path(explicit) if explicit else DEFAULT_CONFIG)
    except ConfigError:
        return None
    return loaded.config.tenants.get(args.tenant)


def _cli_currency(args: argparse.Namespace) -> LocalCurrency | None:
    from gateway.reports import LocalCurrency

    return LocalCurrency.of_tenant(_cli_tenant_config(args))


def _cli_budgets(args: argparse.Namespace, data_dir: Path) -> BudgetLookup:
    """Budget used and left for ``gateway report --tenant T``: the config's budget and the store
    the gateway keeps (``budget.sqlite3`` in the data directory, or Redis). Unknown (null) when
    there is no tenant, no config, no budget or no store: the report itself never fails on it."""
    import asyncio

    from gateway.budget import BudgetStore, RedisBudgetStore, SqliteBudgetStore
    from gateway.reports import no_budgets, read_budget
    from gateway.settings import BUDGET_FILE, DEFAULT_CONFIG

    if not args.tenant or args.tz:
        return no_budgets
    explicit = args.config or os.environ.get("SWITCHBOARD_CONFIG")
    try:
        loaded = load_config(Path(explicit) if explicit else DEFAULT_CONFIG)
    except ConfigError:
        return no_budgets
    tenant_cfg = loaded.config.tenants.get(args.tenant)
    if tenant_cfg is None or tenant_cfg.budget is None:
        return no_budgets
    store: BudgetStore
    if loaded.config.state == "redis":
        store = RedisBudgetStore(
            loaded.config.redis.url, loaded.config.redis.key_prefix, timeout_s=2.0
        )
    elif (data_dir / BUDGET_FILE).exists():
        store = SqliteBudgetStore(data_dir / BUDGET_FILE)
    else:
        return no_budgets

    async def read() -> BudgetLookup:
        try:
            return await read_budget(store, args.tenant, tenant_cfg)
        finally:
            await store.aclose()

    return asyncio.run(read())


def _ledger(args: argparse.Namespace) -> int:
    from gateway.ledger import LedgerError, LedgerQuery, SqliteLedger
    from gateway.retention import export, prune
    from gateway.timezones import parse_bound, zone, zones_for

    if args.ledger_command == "pull":
        return _ledger_pull(args)
    path = _ledger_path(args)
    if path is None:
        return 2
    try:
        zones = zones_for(args.tz, args.config)
        ledger = SqliteLedger(path)
        try:
            if args.ledger_command == "prune":
                done = prune(ledger, keep_days=args.keep_days, zones=zones, now=datetime.now(UTC))
                for p in done:
                    _out(
                        f"{p.tenant} ({p.time_zone}): {p.records} records in {p.days} days "
                        f"before {p.kept_from} rolled up into daily aggregates"
                    )
                if not done:
                    _out(f"nothing to prune: no records older than {args.keep_days} days")
                return 0
            tz = zone(zones.name_of(args.tenant))
            query = LedgerQuery(
                tenant=args.tenant,
                since=parse_bound(args.since, tz, param="--from") if args.since else None,
                until=parse_bound(args.until, tz, end=True, param="--to") if args.until else None,
            )
            if args.output:
                with open(args.output, "w", encoding="utf-8", newline="") as out:
                    count = export(ledger, query, args.format, out)
                _err(f"gateway: exported {count} records to {args.output}")
            else:
                export(ledger, query, args.format, sys.stdout)
        finally:
            ledger.close()
    except (LedgerError, OSError, ValueError) as exc:
        _err(f"gateway: {exc}")
        return 2
    return 0


def _ledger_pull(args: argparse.Namespace) -> int:
    import time

    import redis

    from gateway.ledger import LedgerError, SqliteLedger
    from gateway.ledger_stream import pull, stream_key

    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
    path = data_dir / "ledger.sqlite3"
    try:
        SqliteLedger(path).close()  # create and migrate the target ledger
        client = redis.Redis.from_url(args.redis_url, socket_timeout=10)
        while True:
            result = pull(client, args.key_prefix, path, trim=not args.keep)
            _err(
                f"gateway: {result.stored} new records from {stream_key(args.key_prefix)} into "
                f"{path} ({result.duplicates} already there)"
            )
            if args.follow is None:
                return 0
            time.sleep(args.follow)
    except KeyboardInterrupt:
        return 0
    except redis.RedisError as exc:
        _err(f"gateway: Redis at {args.redis_url} cannot be read: {exc}")
        return 2
    except (LedgerError, OSError, ValueError) as exc:
        _err(f"gateway: {exc}")
        return 2


def _config_check(path: Path) -> int:
    from gateway.pipeline.masking import build_tenant_masking

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        _err(f"error: {exc}")
        return 1
    config = loaded.config
    try:
        build_tenant_masking(config, os.environ)  # a named masking secret that is not set
    except ValueError as exc:
        _err(f"error: {path}: {exc}")
        return 1
    from gateway.runtime import build_answer_layers

    try:
        # Every tenant's matcher model read as the gateway reads it, and its cache secret.
        answers, _ = build_answer_layers(loaded, os.environ)
    except ConfigError as exc:
        _err(f"error: {exc}")
        return 1
    tiers = ", ".join(f"{name} = {t.model}" for name, t in config.tiers.configured().items())
    _out(f"{path}: ok")
    _out(f"  tiers: {tiers}")
    router = config.router
    classifier = router.classifier
    if classifier is not None and classifier.enabled:
        weights = classifier.weights or "router-v1 (shipped)"
        steps = {"rules": f"{len(router.rules)} rule(s)", "classifier": "classifier"}
        order = " -> ".join(steps[s] for s in router.order)
        _out(f"  router: {order} -> default {router.default}")
        _out(f"  classifier: threshold {classifier.threshold:g}, weights {weights}")
        custom = {
            n: t.routing_threshold
            for n, t in config.tenants.items()
            if t.routing_threshold is not None
        }
        if custom:
            _out("  tenant thresholds: " + ", ".join(f"{n} {v:g}" for n, v in custom.items()))
    else:
        _out(f"  router: {len(router.rules)} rule(s) -> default {router.default} (no classifier)")
    _out(f"  models: {', '.join(config.models)}")
    _out(f"  tenants: {', '.join(config.tenants)}")
    safety = [
        f"{name} ({', '.join(on)})"
        for name, t in config.tenants.items()
        if (
            on := [
                *(["masking"] if t.safety.masking.enabled else []),
                *([f"handoff: {t.safety.handoff.action}"] if t.safety.handoff.enabled else []),
                *(["cascade"] if t.safety.cascade.enabled else []),
            ]
        )
    ]
    if safety:
        _out(f"  safety: {'; '.join(safety)}")
    layers = _answer_layers(config, answers)
    if layers:
        _out(f"  answer layers: {'; '.join(layers)}")
    return 0


def _answer_layers(config: GatewayConfig, answers: ApprovedAnswers | None) -> list[str]:
    """Per tenant: its approved answers (intents, stale model) and semantic cache threshold."""
    from gateway.pipeline.semantic import tenant_policies

    policies = tenant_policies(config) if config.semantic_cache.enabled else {}
    out = []
    for name in config.tenants:
        on = []
        loaded = answers.tenant(name) if answers is not None and config.answers.enabled else None
        if loaded is not None:
            stale = ", model stale: retrain it" if loaded.stale else ""
            on.append(f"answers: {len(loaded.answers.intents)} intents{stale}")
        if name in policies:
            on.append(f"semantic cache: threshold {policies[name].threshold:g}")
        if on:
            out.append(f"{name} ({', '.join(on)})")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
