"""The ``gateway`` command: serve, keys create, report, config check, and the routing commands
train-router, eval-router, classify and calibrate (``gateway/routing/commands.py``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import ConfigError, load_config
from gateway.keys import hash_key, new_key
from gateway.routing.commands import add_routing_commands, run_routing_command
from gateway.settings import Settings, default_data_dir

DATA_DIR_HELP = "state directory (default $SWITCHBOARD_DATA_DIR, else ~/.local/share/switchboard)"


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _parser() -> argparse.ArgumentParser:
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

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create", help="make a new key; prints it once with its config line"
    )
    create.add_argument("--tenant", required=True, help="tenant the key is for")

    report = sub.add_parser("report", help="spend report from the ledger")
    report.add_argument("--tenant", help="only this tenant")
    report.add_argument("--since", help="from this day (YYYY-MM-DD, UTC) or ISO time, inclusive")
    report.add_argument(
        "--until", help="up to and including this day (YYYY-MM-DD, UTC) or up to an ISO time"
    )
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument(
        "--group-by",
        default="tenant,route,model",
        help="comma-separated: tenant, route, model, day, status_class",
    )
    report.add_argument("--data-dir", help=DATA_DIR_HELP)

    config = sub.add_parser("config", help="config files")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("path", help="the YAML file to check")
    add_routing_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "keys":
        return _keys_create(args.tenant)
    if args.command == "report":
        return _report(args)
    routed = run_routing_command(args)
    if routed is not None:
        return routed
    return _config_check(Path(args.path))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.ledger import LedgerError

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env(
            config_path=args.config, data_dir=args.data_dir, host=args.host, port=args.port
        )
        app = create_app(settings)
    except (ConfigError, LedgerError, OSError, ValueError) as exc:
        _err(f"gateway: {exc}")
        return 2
    _err(
        f"Switchboard on http://{settings.host}:{settings.port}/v1 "
        f"(config {settings.config_path}, data {settings.data_dir})"
    )
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
    key = new_key()
    today = datetime.now(UTC).date().isoformat()
    _out("New API key (shown once; store it now):")
    _out(f"    {key}")
    _out("")
    _out(f"Add this line under tenants.{tenant}.keys in your config:")
    _out(f"      - sha256: {hash_key(key)}  # created {today}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from gateway.ledger import LedgerError, LedgerQuery, SqliteLedger
    from gateway.reports import (
        build_report,
        parse_date_bound,
        render_csv,
        render_json,
        render_table,
    )

    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
    path = data_dir / "ledger.sqlite3"
    if not path.exists():
        _err(
            f"gateway: no ledger at {path}; start the gateway first, or pass --data-dir "
            f"(default {default_data_dir({})} or $SWITCHBOARD_DATA_DIR)"
        )
        return 2
    try:
        query = LedgerQuery(
            tenant=args.tenant,
            since=parse_date_bound(args.since) if args.since else None,
            until=parse_date_bound(args.until, end=True) if args.until else None,
        )
        group_by = tuple(g.strip() for g in args.group_by.split(",") if g.strip())
        ledger = SqliteLedger(path)
        try:
            report = build_report(ledger, query, group_by)
        finally:
            ledger.close()
    except (LedgerError, ValueError) as exc:
        _err(f"gateway: {exc}")
        return 2
    render = {"table": render_table, "csv": render_csv, "json": render_json}[args.format]
    sys.stdout.write(render(report).rstrip("\n") + "\n")
    return 0


def _config_check(path: Path) -> int:
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        _err(f"error: {exc}")
        return 1
    config = loaded.config
    tiers = ", ".join(f"{name} = {t.model}" for name, t in config.tiers.configured().items())
    _out(f"{path}: ok")
    _out(f"  tiers: {tiers}")
    _out(f"  router: default {config.router.default}, {len(config.router.rules)} rule(s)")
    _out(f"  models: {', '.join(config.models)}")
    _out(f"  tenants: {', '.join(config.tenants)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
