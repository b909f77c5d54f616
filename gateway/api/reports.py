"""Spend reports over HTTP: ``GET /admin/reports/spend`` (JSON, CSV) and ``GET /admin/reports``.

This module only translates: who may read what, query parameters into a ``SpendQuery``, and the
answer onto the wire. The sums are ``gateway.reports``; the page is ``gateway.report_html``.

A tenant key reads its own tenant (asking for another is 403); the admin key reads every tenant,
or one with ``tenant=``. ``from`` / ``to`` are days (``YYYY-MM-DD``, ``to`` inclusive) in the
tenant's time zone, or ISO 8601 instants with an offset (``to`` exclusive).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import anyio
from litestar import Response, get

from gateway.api.handlers import AnyRequest, request_headers, switchboard_of
from gateway.api.openapi import described
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.pipeline.stages import presented_key
from gateway.report_html import build_html_report
from gateway.reports import (
    BudgetLookup,
    LocalCurrency,
    SpendQuery,
    build_spend_report,
    no_budgets,
    parse_group_by,
    read_budget,
    render_spend_csv,
    render_spend_json,
)
from gateway.service import Switchboard
from gateway.timezones import TenantZones, parse_bound, zone

__all__ = ["REPORT_ROUTES", "budget_lookup"]

_SPEND_PARAMS = frozenset({"tenant", "from", "to", "group_by", "format"})
_HTML_PARAMS = frozenset({"tenant", "from", "to"})


async def budget_lookup(board: Switchboard, tenant: str | None) -> BudgetLookup:
    """ "Budget used and left" for a report on ``tenant``, read from the budget store now (the
    report itself is built in a worker thread, where the asynchronous store cannot be asked)."""
    store = board.budget_store
    if tenant is None or store is None:
        return no_budgets
    return await read_budget(store, tenant, board.runtime.tenant(tenant))


def _reader_tenant(request: AnyRequest, board: Switchboard) -> str | None:
    """The tenant a key may read (None: the admin key, every tenant); 401 for any other key."""
    key = presented_key(request_headers(request))
    keys = board.runtime.keys
    if key is not None and keys.is_admin(key):
        return None
    tenant = keys.tenant_for(key) if key else None
    if tenant is None:
        raise AuthenticationFailed(
            "Missing or incorrect API key: send `Authorization: Bearer <key>` with a tenant key "
            "(its own spend) or the admin key (config: admin.keys; every tenant)."
        )
    return tenant


def _tenant(params: Mapping[str, str], board: Switchboard, own: str | None) -> str | None:
    asked = params.get("tenant") or None
    if own is not None:
        if asked is not None and asked != own:
            raise PermissionDenied(
                f"This key belongs to tenant {own!r} and may read only its own spend, not "
                f"{asked!r}: leave out tenant= (or send tenant={own}), or use the admin key.",
                param="tenant",
            )
        return own
    tenants = board.runtime.config.tenants
    if asked is not None and asked not in tenants:
        raise InvalidRequest(
            f"unknown tenant {asked!r}; configured tenants: {', '.join(sorted(tenants))} "
            "(or leave out tenant= for all of them)",
            param="tenant",
        )
    return asked


def _check_names(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        hint = (
            " (the older /admin/report took since/until)"
            if {"since", "until"} & set(unknown)
            else ""
        )
        raise InvalidRequest(
            f"unknown parameter {', '.join(map(repr, unknown))}{hint}; "
            f"this endpoint takes {', '.join(sorted(allowed))}",
            param=unknown[0],
        )


def _query(
    params: Mapping[str, str], tenant: str | None, zones: TenantZones, group_by: tuple[str, ...]
) -> SpendQuery:
    tz = zone(zones.name_of(tenant) if tenant is not None else zones.default)
    bounds = []
    for name, end in (("from", False), ("to", True)):
        text = params.get(name) or None
        try:
            bounds.append(parse_bound(text, tz, end=end, param=name) if text else None)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param=name) from exc
    try:
        return SpendQuery(tenant=tenant, since=bounds[0], until=bounds[1], group_by=group_by)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="from") from exc


@get("/admin/reports/spend", operation_class=described(query=tuple(sorted(_SPEND_PARAMS))))
async def spend_report(request: AnyRequest) -> Response[bytes]:
    """Spend per day, month, model, tier or user: ``?tenant=&from=&to=&group_by=&format=``."""
    board = switchboard_of(request)
    own = _reader_tenant(request, board)
    params: Mapping[str, str] = request.query_params
    _check_names(params, _SPEND_PARAMS)
    tenant = _tenant(params, board, own)
    fmt = params.get("format") or "json"
    if fmt not in ("json", "csv"):
        raise InvalidRequest(
            f"unknown format {fmt!r}; use format=json or format=csv", param="format"
        )
    try:
        group_by = parse_group_by(params.get("group_by", "day"))
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="group_by") from exc
    zones = TenantZones.of_config(board.runtime.config.tenants)
    query = _query(params, tenant, zones, group_by)
    ledger = board.runtime.ledger
    lookup = await budget_lookup(board, tenant)

    def build() -> str:
        ledger.flush()
        local = LocalCurrency.of_tenant(board.runtime.tenant(tenant)) if tenant else None
        report = build_spend_report(ledger, query, zones, budgets=lookup, local=local)
        return render_spend_csv(report) if fmt == "csv" else render_spend_json(report)

    # Flushing and reading SQLite block: keep them off the event loop.
    body = await anyio.to_thread.run_sync(build)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return Response(content=body.encode(), media_type=media)


@get("/admin/reports", operation_class=described(query=tuple(sorted(_HTML_PARAMS))))
async def html_report(request: AnyRequest) -> Response[bytes]:
    """The spend report as one self-contained HTML page: ``?tenant=&from=&to=``."""
    board = switchboard_of(request)
    own = _reader_tenant(request, board)
    params: Mapping[str, str] = request.query_params
    _check_names(params, _HTML_PARAMS)
    tenant = _tenant(params, board, own)
    zones = TenantZones.of_config(board.runtime.config.tenants)
    query = _query(params, tenant, zones, ("day",))
    ledger = board.runtime.ledger
    lookup = await budget_lookup(board, tenant)

    def build() -> str:
        ledger.flush()
        return build_html_report(
            ledger, tenant, query.since, query.until, zones, budgets=lookup, now=datetime.now(UTC)
        )

    body = await anyio.to_thread.run_sync(build)
    return Response(content=body.encode(), media_type="text/html; charset=utf-8")


REPORT_ROUTES = [spend_report, html_report]
