"""The append-only spend ledger: one record per request, aggregates for finance, named migrations.

``record()`` sits on the request hot path, so it only enqueues; one daemon writer thread commits
batches in single transactions. ``commit_soon()`` is the request path's way in: the records of one
event-loop iteration are committed together on the loop itself (a short transaction costs less
than a hop to the writer thread and back), and anything the loop cannot commit at once (the
database is locked, the disk is full) goes to the writer thread, which waits and retries.
``flush()`` is the durability barrier: when it returns, everything recorded before the call is
committed and visible to any other connection, including another process (a CLI ``report``
running next to the server).

The embedded backend is SQLite in WAL mode, so readers never block the writer and several
processes may open the same file. Failed writes are retried with backoff and logged; a batch is
never dropped unless ``close()`` gives up on it, and then it says so (log and ``LedgerError``).

    LedgerError     the ledger cannot take or commit records (closed, disk full, locked too long)
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "GROUP_BY_COLUMNS",
    "MIGRATIONS",
    "Ledger",
    "LedgerError",
    "LedgerQuery",
    "LedgerRecord",
    "LocalDay",
    "SPEND_COLUMNS",
    "SqliteLedger",
    "SummaryRow",
    "TenantSet",
]

logger = logging.getLogger("gateway.ledger")

FeatureValue = float | int | str | bool


class LedgerError(Exception):
    """The ledger cannot accept or commit records."""


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """What one request did and cost. ``ts`` is timezone-aware UTC, when the request arrived."""

    request_id: str
    ts: datetime
    tenant: str
    requested_model: str  # the model name the client sent ("auto", "gpt-4o-mini", ...)
    route: str  # "cache" | "small" | "large" | "none" (failed before routing)
    model: str | None  # the upstream model that answered; None if none did
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    large_cost_micros: int  # the same tokens priced at the tenant's large model
    latency_ms: float
    status: int  # HTTP status the client got; 499 = client disconnected
    stream: bool
    cache_hit: bool = False
    usage_estimated: bool = False  # tokens counted by us, not reported by the upstream
    error_code: str | None = None
    end_user: str | None = None  # the request's ``user`` field
    reasons: tuple[str, ...] = ()
    # Routing features, kept so that a new routing config can be replayed over past traffic.
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    request_text: str | None = None  # only when the tenant's config allows storing it
    # Tiers that failed before the one that answered (fallbacks), e.g. "small: 503 upstream...".
    attempts: tuple[str, ...] = ()
    # The human-handoff signal of the request ("legal_threat", "intent:refund_dispute"), if any.
    handoff: str | None = None
    # Which answer-reuse layer answered a "cache" request: "exact", "answers" (approved
    # answers) or "semantic"; None when a model (or nothing) answered.
    cache_layer: str | None = None
    # The approved-answers intent that answered (layer "answers").
    intent: str | None = None
    # What the small-first cascade did: "kept", "escalated" (cost_micros includes the discarded
    # small answer, listed in attempts) or "unjudged"; None when it did not run.
    cascade: str | None = None

    @property
    def savings_micros(self) -> int:
        return self.large_cost_micros - self.cost_micros


@dataclass(frozen=True, slots=True)
class LedgerQuery:
    """Which records to read: one tenant (or all) in ``[since, until)``; bounds must be aware."""

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            bound = getattr(self, name)
            if bound is not None and bound.utcoffset() is None:
                raise ValueError(
                    f"LedgerQuery.{name} must be timezone-aware (e.g. tzinfo=datetime.UTC), "
                    f"got naive {bound.isoformat()}"
                )


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """Totals for one group; ``key`` maps each group_by column to its value ("" for none)."""

    key: Mapping[str, str]
    requests: int
    errors: int  # status >= 400
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    large_cost_micros: int
    handoffs: int = 0  # requests with a human-handoff signal

    @property
    def savings_micros(self) -> int:
        return self.large_cost_micros - self.cost_micros


@dataclass(frozen=True, slots=True)
class TenantSet:
    """Which tenants a read covers: ``only`` these (None: every tenant), minus ``excluding``."""

    only: tuple[str, ...] | None = None
    excluding: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalDay:
    """One calendar day in a time zone: ``day`` "YYYY-MM-DD" covers the instants [start, end)."""

    day: str
    time_zone: str
    start: datetime
    end: datetime


class Ledger(Protocol):
    def record(self, rec: LedgerRecord) -> None:
        """Enqueue one record and return at once; never blocks the event loop."""
        ...

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything recorded before the call is durable; LedgerError on timeout."""
        ...

    def close(self) -> None:
        """Flush, stop the writer and close connections. Idempotent."""
        ...

    def records(self, query: LedgerQuery) -> Iterator[LedgerRecord]:
        """Matching records, ordered by ``ts`` then insertion."""
        ...

    def count(self, query: LedgerQuery) -> int: ...

    def summarize(self, query: LedgerQuery, group_by: Sequence[str]) -> list[SummaryRow]:
        """Sums per group; ``group_by`` is a subset of ``GROUP_BY_COLUMNS``, else ``ValueError``."""
        ...

    # -- spend reports over local days (gateway.reports), with retention ----------------------

    def local_spend(
        self,
        tenants: TenantSet,
        since: datetime,
        until: datetime,
        utc_offset: timedelta,
        columns: Sequence[str],
        *,
        scan: bool = False,
    ) -> list[SummaryRow]:
        """Raw records in ``[since, until)`` summed per ``columns`` (of ``SPEND_COLUMNS``).

        "day" is the date of ``ts + utc_offset``: the caller splits its range where the time
        zone's offset changes, so that every record's local day is right across DST. ``scan``
        reads the table straight through instead of by index: faster when most rows match.
        """
        ...

    def aggregated_spend(
        self,
        tenants: TenantSet,
        since: datetime | None,
        until: datetime | None,
        columns: Sequence[str],
    ) -> list[SummaryRow]:
        """Rolled-up days whose first instant is in ``[since, until)``, summed per ``columns``."""
        ...

    def spend_bounds(self, tenants: TenantSet) -> tuple[datetime, datetime] | None:
        """The first and last ``ts`` of the raw records of ``tenants``; None if there are none."""
        ...

    def cascade_outcomes(
        self, tenants: TenantSet, since: datetime | None, until: datetime | None
    ) -> list[SummaryRow]:
        """Records the cascade judged in ``[since, until)`` (raw and rolled-up days), summed
        per outcome (key ``{"cascade": "kept" | "escalated" | "unjudged"}``)."""
        ...

    def cache_layers(
        self, tenants: TenantSet, since: datetime | None, until: datetime | None
    ) -> list[SummaryRow]:
        """Raw records answered from stored text in ``[since, until)``, summed per layer (key
        ``{"cache_layer": "exact" | "answers" | "semantic"}``)."""
        ...

    def handoff_reasons(
        self, tenants: TenantSet, since: datetime | None, until: datetime | None
    ) -> dict[str, int]:
        """Raw records with a human-handoff signal in ``[since, until)``, counted per reason."""
        ...

    def tenants(self) -> list[str]:
        """Every tenant with raw records, sorted."""
        ...

    def roll_up(self, tenant: str, days: Sequence[LocalDay]) -> int:
        """Move each day's raw records into ``daily_aggregates``; returns how many were moved."""
        ...


# Named, ordered, append-only: never edit a migration that has shipped, add a new one. Each is a
# single SQL statement so it runs inside the transaction that records it.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_create_requests",
        """
        CREATE TABLE requests (
            id                INTEGER PRIMARY KEY,
            request_id        TEXT    NOT NULL,
            ts_us             INTEGER NOT NULL,
            tenant            TEXT    NOT NULL,
            requested_model   TEXT    NOT NULL,
            route             TEXT    NOT NULL,
            model             TEXT,
            prompt_tokens     INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cost_micros       INTEGER NOT NULL,
            large_cost_micros INTEGER NOT NULL,
            latency_ms        REAL    NOT NULL,
            status            INTEGER NOT NULL,
            stream            INTEGER NOT NULL,
            cache_hit         INTEGER NOT NULL,
            usage_estimated   INTEGER NOT NULL,
            error_code        TEXT,
            end_user          TEXT,
            reasons           TEXT    NOT NULL,
            features          TEXT    NOT NULL,
            request_text      TEXT
        )
        """,
    ),
    (
        "0002_index_requests_tenant_ts",
        "CREATE INDEX requests_tenant_ts ON requests (tenant, ts_us)",
    ),
    ("0003_index_requests_ts", "CREATE INDEX requests_ts ON requests (ts_us)"),
    (
        "0004_add_requests_attempts",
        "ALTER TABLE requests ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]'",
    ),
    (
        # Verdicts on answers (POST /v1/feedback); the latest verdict per request wins.
        "0005_feedback",
        """
        CREATE TABLE feedback (
            request_id TEXT    PRIMARY KEY,
            tenant     TEXT    NOT NULL,
            verdict    TEXT    NOT NULL,
            comment    TEXT,
            ts_us      INTEGER NOT NULL
        )
        """,
    ),
    (
        # Daily totals kept for good: `gateway ledger prune` writes a day here and deletes its raw
        # records in one transaction. "day" is the tenant's local date in time_zone, start_us its
        # first instant; '' stands for no model / no end user.
        "0006_daily_aggregates",
        """
        CREATE TABLE daily_aggregates (
            tenant            TEXT    NOT NULL,
            day               TEXT    NOT NULL,
            time_zone         TEXT    NOT NULL,
            start_us          INTEGER NOT NULL,
            route             TEXT    NOT NULL,
            model             TEXT    NOT NULL,
            end_user          TEXT    NOT NULL,
            status_class      TEXT    NOT NULL,
            requests          INTEGER NOT NULL,
            errors            INTEGER NOT NULL,
            cache_hits        INTEGER NOT NULL,
            prompt_tokens     INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cost_micros       INTEGER NOT NULL,
            large_cost_micros INTEGER NOT NULL,
            PRIMARY KEY (tenant, day, route, model, end_user, status_class)
        )
        """,
    ),
    (
        # Feedback and the ledger stream look records up by request id.
        "0007_index_requests_request_id",
        "CREATE INDEX requests_request_id ON requests (request_id)",
    ),
    (
        # Where the ledger stream relay (gateway.ledger_stream) and `gateway ledger pull` got to.
        "0008_stream_cursors",
        "CREATE TABLE stream_cursors (name TEXT PRIMARY KEY, position TEXT NOT NULL)",
    ),
    (
        # The human-handoff signal of a request (docs/safety.md); NULL: none.
        "0009_add_requests_handoff",
        "ALTER TABLE requests ADD COLUMN handoff TEXT",
    ),
    (
        # Handoffs counted in the rolled-up days too, so reports show them after pruning.
        "0010_add_daily_aggregates_handoffs",
        "ALTER TABLE daily_aggregates ADD COLUMN handoffs INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # Which answer-reuse layer answered (exact, answers, semantic; docs/caching.md).
        "0011_add_requests_cache_layer",
        "ALTER TABLE requests ADD COLUMN cache_layer TEXT",
    ),
    (
        # The approved-answers intent that answered.
        "0012_add_requests_intent",
        "ALTER TABLE requests ADD COLUMN intent TEXT",
    ),
    (
        # The cascade's outcome (kept, escalated, unjudged; docs/safety.md); NULL: it did not run.
        "0013_add_requests_cascade",
        "ALTER TABLE requests ADD COLUMN cascade TEXT",
    ),
    (
        # The cascade's outcomes of rolled-up days (`gateway ledger prune`), so reports keep
        # them after the raw records are gone; "day", time_zone and start_us as in
        # daily_aggregates.
        "0014_daily_cascade",
        """
        CREATE TABLE daily_cascade (
            tenant            TEXT    NOT NULL,
            day               TEXT    NOT NULL,
            time_zone         TEXT    NOT NULL,
            start_us          INTEGER NOT NULL,
            cascade           TEXT    NOT NULL,
            requests          INTEGER NOT NULL,
            cost_micros       INTEGER NOT NULL,
            large_cost_micros INTEGER NOT NULL,
            PRIMARY KEY (tenant, day, cascade)
        )
        """,
    ),
]

# SQL expression per group_by column. Values are TEXT so that keys compare and print uniformly.
_GROUP_EXPRESSIONS: dict[str, str] = {
    "tenant": "tenant",
    "route": "route",
    "model": "COALESCE(model, '')",
    "day": "date(ts_us / 1000000, 'unixepoch')",
    "status_class": "CAST(status / 100 AS TEXT) || 'xx'",
}
GROUP_BY_COLUMNS: tuple[str, ...] = tuple(_GROUP_EXPRESSIONS)

# Spend reports (local days) and retention: the same sums over raw records and rolled-up days.
_SPEND_EXPRESSIONS: dict[str, str] = {
    "tenant": "tenant",
    "route": "route",
    "model": "COALESCE(model, '')",
    "end_user": "COALESCE(end_user, '')",
    "status_class": _GROUP_EXPRESSIONS["status_class"],
}
SPEND_COLUMNS: tuple[str, ...] = (*_SPEND_EXPRESSIONS, "day")
_RAW_SUMS = (
    "COUNT(*), COALESCE(SUM(status >= 400), 0), COALESCE(SUM(cache_hit), 0), "
    "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
    "COALESCE(SUM(cost_micros), 0), COALESCE(SUM(large_cost_micros), 0), "
    "COALESCE(SUM(handoff IS NOT NULL), 0)"
)
_ROLLED_SUMS = ", ".join(
    f"COALESCE(SUM({c}), 0)"
    for c in (
        "requests",
        "errors",
        "cache_hits",
        "prompt_tokens",
        "completion_tokens",
        "cost_micros",
        "large_cost_micros",
        "handoffs",
    )
)
_ROLL_UP_SELECT = (
    f"SELECT route, {_SPEND_EXPRESSIONS['model']}, {_SPEND_EXPRESSIONS['end_user']}, "
    f"{_SPEND_EXPRESSIONS['status_class']} AS sc, {_RAW_SUMS} FROM requests "
    "WHERE tenant = ? AND ts_us >= ? AND ts_us < ? GROUP BY 1, 2, 3, 4"
)
_ROLL_UP_UPSERT = """
    INSERT INTO daily_aggregates (
        tenant, day, time_zone, start_us, route, model, end_user, status_class, requests, errors,
        cache_hits, prompt_tokens, completion_tokens, cost_micros, large_cost_micros, handoffs
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant, day, route, model, end_user, status_class) DO UPDATE SET
        requests = requests + excluded.requests,
        errors = errors + excluded.errors,
        cache_hits = cache_hits + excluded.cache_hits,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cost_micros = cost_micros + excluded.cost_micros,
        large_cost_micros = large_cost_micros + excluded.large_cost_micros,
        handoffs = handoffs + excluded.handoffs
"""
_CASCADE_ROLL_UP = """
    INSERT INTO daily_cascade (
        tenant, day, time_zone, start_us, cascade, requests, cost_micros, large_cost_micros
    )
    SELECT ?, ?, ?, ?, cascade, COUNT(*), SUM(cost_micros), SUM(large_cost_micros)
    FROM requests
    WHERE tenant = ? AND ts_us >= ? AND ts_us < ? AND cascade IS NOT NULL
    GROUP BY cascade
    ON CONFLICT (tenant, day, cascade) DO UPDATE SET
        requests = requests + excluded.requests,
        cost_micros = cost_micros + excluded.cost_micros,
        large_cost_micros = large_cost_micros + excluded.large_cost_micros
"""
# daily_cascade's columns in SummaryRow's order (the sums it has no column for are 0).
_CASCADE_ROLLED_SUMS = (
    "COALESCE(SUM(requests), 0), 0, 0, 0, 0, COALESCE(SUM(cost_micros), 0), "
    "COALESCE(SUM(large_cost_micros), 0), 0"
)
_DAY_US = 86_400_000_000
_EPOCH_DAY = date(1970, 1, 1)

_COLUMNS = (
    "request_id, ts_us, tenant, requested_model, route, model, prompt_tokens, completion_tokens, "
    "cost_micros, large_cost_micros, latency_ms, status, stream, cache_hit, usage_estimated, "
    "error_code, end_user, reasons, features, request_text, attempts, handoff, "
    "cascade, cache_layer, intent"
)
LEDGER_COLUMNS: tuple[str, ...] = tuple(c.strip() for c in _COLUMNS.split(","))
_COLUMN_AT = {name: i for i, name in enumerate(LEDGER_COLUMNS)}
_INSERT = f"INSERT INTO requests ({_COLUMNS}) VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_BATCH_SIZE = 500
_LINGER_S = 0.02
_PAGE_SIZE = 1000
_RETRY_FIRST_DELAY = 0.05
_RETRY_MAX_DELAY = 5.0


def _to_us(ts: datetime) -> int:
    # timedelta floor division is exact integer arithmetic; a float timestamp would not be.
    return (ts - _EPOCH) // _ONE_US


def _from_us(ts_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_us)


def _to_row(rec: LedgerRecord) -> tuple[Any, ...]:
    return (
        rec.request_id,
        _to_us(rec.ts),
        rec.tenant,
        rec.requested_model,
        rec.route,
        rec.model,
        rec.prompt_tokens,
        rec.completion_tokens,
        rec.cost_micros,
        rec.large_cost_micros,
        rec.latency_ms,
        rec.status,
        int(rec.stream),
        int(rec.cache_hit),
        int(rec.usage_estimated),
        rec.error_code,
        rec.end_user,
        json.dumps(list(rec.reasons), ensure_ascii=False),
        json.dumps(dict(rec.features), ensure_ascii=False, default=str),
        rec.request_text,
        json.dumps(list(rec.attempts), ensure_ascii=False),
        rec.handoff,
        rec.cascade,
        rec.cache_layer,
        rec.intent,
    )


def _from_row(row: Sequence[Any]) -> LedgerRecord:
    return LedgerRecord(
        request_id=row[0],
        ts=_from_us(row[1]),
        tenant=row[2],
        requested_model=row[3],
        route=row[4],
        model=row[5],
        prompt_tokens=row[6],
        completion_tokens=row[7],
        cost_micros=row[8],
        large_cost_micros=row[9],
        latency_ms=row[10],
        status=row[11],
        stream=bool(row[12]),
        cache_hit=bool(row[13]),
        usage_estimated=bool(row[14]),
        error_code=row[15],
        end_user=row[16],
        reasons=tuple(json.loads(row[17])),
        features=json.loads(row[18]),
        request_text=row[19],
        attempts=tuple(json.loads(row[20])),
        handoff=row[21],
        cascade=row[22],
        cache_layer=row[_COLUMN_AT["cache_layer"]],
        intent=row[_COLUMN_AT["intent"]],
    )


def _where(query: LedgerQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.tenant is not None:
        clauses.append("tenant = ?")
        params.append(query.tenant)
    if query.since is not None:
        clauses.append("ts_us >= ?")
        params.append(_to_us(query.since))
    if query.until is not None:
        clauses.append("ts_us < ?")
        params.append(_to_us(query.until))
    return " AND ".join(clauses) or "1", params


def _tenant_where(tenants: TenantSet) -> tuple[str, list[Any]]:
    clauses = ["1"]
    params: list[Any] = []
    if tenants.only is not None:
        clauses.append(f"tenant IN ({', '.join('?' * len(tenants.only))})")
        params.extend(tenants.only)
    if tenants.excluding:
        clauses.append(f"tenant NOT IN ({', '.join('?' * len(tenants.excluding))})")
        params.extend(tenants.excluding)
    return " AND ".join(clauses), params


def _raw_where(
    tenants: TenantSet, since: datetime | None, until: datetime | None, present: str
) -> tuple[str, list[Any]]:
    """Raw records of ``tenants`` in ``[since, until)`` whose column ``present`` is set."""
    where, params = _tenant_where(tenants)
    where += f" AND {present} IS NOT NULL"
    return where + _range_where("ts_us", since, until, params), params


def _range_where(
    column: str, since: datetime | None, until: datetime | None, params: list[Any]
) -> str:
    """`` AND column >= ? AND column < ?`` for the bounds given; their values join ``params``."""
    where = ""
    if since is not None:
        where += f" AND {column} >= ?"
        params.append(_to_us(since))
    if until is not None:
        where += f" AND {column} < ?"
        params.append(_to_us(until))
    return where


@dataclass(slots=True)
class _Barrier:
    """Queued behind records; set by the writer once everything ahead of it is committed."""

    done: threading.Event
    stop: bool = False
    # Called from the writer thread after ``done`` is set (``when_committed``).
    notify: Callable[[], None] | None = None


# A record committed on the loop and the future its request awaits.
_Pending = tuple["LedgerRecord", "asyncio.Future[None]"]


class SqliteLedger:
    """The embedded ledger: one SQLite file in WAL mode, written by one background thread.

    ``path`` must be a file path (not ``:memory:``): the writer and the readers use separate
    connections. ``busy_timeout_ms`` is how long one statement waits for another process's lock.
    """

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[LedgerRecord | _Barrier] = queue.SimpleQueue()
        # Orders record()/flush() against close(), so nothing is enqueued behind the stop barrier.
        self._state_lock = threading.Lock()
        self._closed = False
        self._abandon = threading.Event()
        self._last_error: BaseException | None = None
        self._failing = False
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        # commit_soon(): records waiting for the loop's next commit (guarded by _state_lock),
        # the loop and thread they are committed on, that thread's no-wait connection.
        self._pending: list[_Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._inline: sqlite3.Connection | None = None

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The writer thread owns this connection after start(); check_same_thread is off only
            # because it is created here, in the caller's thread.
            self._writer = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger at {self.path}: {exc}") from exc
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=NORMAL")
            _migrate(self._writer)
        except sqlite3.Error as exc:
            self._writer.close()
            raise LedgerError(f"cannot prepare the ledger at {self.path}: {exc}") from exc

        self._thread = threading.Thread(target=self._run, name="gateway-ledger-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    def record(self, rec: LedgerRecord) -> None:
        """Enqueue ``rec`` for the writer thread; returns in microseconds, never touches disk."""
        if rec.ts.tzinfo is None:
            # Fail in the caller, where the bug is, rather than later in the writer thread.
            raise ValueError(f"LedgerRecord.ts must be timezone-aware, got {rec.ts.isoformat()}")
        with self._state_lock:
            if self._closed:
                raise LedgerError(
                    f"the ledger at {self.path} is closed; cannot record {rec.request_id}"
                )
            self._queue.put(rec)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record enqueued before this call is committed.

        Raises ``LedgerError`` if that takes longer than ``timeout`` seconds (the writer keeps
        retrying; the records stay queued).
        """
        self._take_pending()
        done = threading.Event()
        with self._state_lock:
            if self._closed:
                return  # close() already drained everything it could
            self._queue.put(_Barrier(done))
        if not done.wait(timeout):
            raise LedgerError(
                f"the ledger at {self.path} has not committed within {timeout:g}s "
                f"(last error: {self._last_error or 'none'}); records stay queued and are retried"
            )

    def when_committed(self, notify: Callable[[], None]) -> None:
        """Call ``notify`` (from the writer thread) once everything recorded before is committed.

        The non-blocking ``flush``: the ledger stage awaits it so that no answer ends before its
        record is committed, and a ``kill -9`` loses no answered request (docs/reliability.md).
        Concurrent waiters share one commit. On a closed ledger ``notify`` runs at once.
        """
        with self._state_lock:
            if not self._closed:
                self._queue.put(_Barrier(threading.Event(), notify=notify))
                return
        notify()

    def commit_soon(self, rec: LedgerRecord) -> asyncio.Future[None]:
        """Record ``rec``; the returned future resolves once it is committed.

        For the request path, on the event loop: every record of one loop iteration is committed
        in one transaction on the loop, right after it (tens of µs, no thread hop). When that
        cannot be done at once (locked by another process, a disk error, the writer already
        retrying, another thread), the records go to the writer thread, which waits for locks
        and retries, and the future resolves when it has committed them.
        """
        if rec.ts.tzinfo is None:
            raise ValueError(f"LedgerRecord.ts must be timezone-aware, got {rec.ts.isoformat()}")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        me = threading.get_ident()
        with self._state_lock:
            if self._closed:
                raise LedgerError(
                    f"the ledger at {self.path} is closed; cannot record {rec.request_id}"
                )
            if self._loop_thread is None or (
                self._loop_thread == me and self._loop is not None and self._loop.is_closed()
            ):
                self._loop, self._loop_thread = loop, me
            if self._loop is loop and self._loop_thread == me:
                self._pending.append((rec, done))
                if len(self._pending) == 1:
                    loop.call_soon(self._commit_pending)
                return done
        self._hand_over([(rec, done)], loop)
        return done

    def _commit_pending(self) -> None:
        """On the loop: commit what ``commit_soon`` collected, or hand it to the writer."""
        with self._state_lock:
            pending, self._pending = self._pending, []
        if not pending:
            return  # flush() or close() handed them over already
        conn = None if self._failing else self._inline_conn()
        if conn is not None:
            rows = _rows([rec for rec, _ in pending], self.path)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                logger.debug("ledger %s: loop commit failed, to the writer: %s", self.path, exc)
            else:
                for _, done in pending:
                    if not done.done():
                        done.set_result(None)
                return
        assert self._loop is not None
        self._hand_over(pending, self._loop)

    def _hand_over(self, pending: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        """Queue ``pending`` for the writer thread; resolve their futures once it committed."""

        def resolve() -> None:
            for _, done in pending:
                if not done.done():
                    done.set_result(None)

        def notify() -> None:  # the writer thread
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:
                pass  # the loop has closed: nobody waits any more

        with self._state_lock:
            if not self._closed:
                for rec, _ in pending:
                    self._queue.put(rec)
                self._queue.put(_Barrier(threading.Event(), notify=notify))
                return
        logger.error(
            "ledger %s closed with %d records not yet written: %s",
            self.path,
            len(pending),
            ", ".join(rec.request_id for rec, _ in pending),
        )
        resolve()

    def _take_pending(self) -> None:
        """Hand what waits for the loop's commit to the writer (flush, close: in queue order)."""
        with self._state_lock:
            pending, self._pending = self._pending, []
        if pending:
            assert self._loop is not None
            self._hand_over(pending, self._loop)

    def _inline_conn(self) -> sqlite3.Connection | None:
        if self._inline is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None)
                # Never wait for a lock on the loop (the writer thread waits instead). SQLite's
                # own checkpoint every 1,000 pages of WAL (about 300 commits) runs here, a few
                # ms on the loop: run from another thread while the loop keeps committing, a
                # passive checkpoint never catches up and the WAL grows without end (500 MB
                # after 70k requests), and a blocking one costs more (docs/benchmarks.md).
                conn.execute("PRAGMA busy_timeout=0")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                logger.warning("ledger %s: no connection on the event loop: %s", self.path, exc)
                return None
            self._inline = conn
        return self._inline

    @property
    def failing(self) -> bool:
        """True while a write is being retried (disk full or read-only, locked past the busy
        timeout): records wait in the queue until it works again."""
        return self._failing

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, stop the writer and close connections. Idempotent.

        If the queue cannot be committed within ``timeout`` seconds the writer gives up, logs how
        many records were lost, and ``LedgerError`` is raised.
        """
        self._take_pending()
        done = threading.Event()
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_Barrier(done, stop=True))
        drained = done.wait(timeout)
        if not drained:
            self._abandon.set()
        # A statement in progress may wait busy_timeout for a lock before it sees the abandon flag.
        self._thread.join(self._busy_timeout_ms / 1000 + 1.0)
        if not self._thread.is_alive():
            self._writer.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        inline, self._inline = self._inline, None
        if inline is not None:
            try:
                inline.close()
            except sqlite3.ProgrammingError:  # opened by another thread: left to the collector
                logger.debug("ledger %s: the loop's connection is left open", self.path)
        if not drained:
            raise LedgerError(
                f"the ledger at {self.path} could not commit its queued records within "
                f"{timeout:g}s (last error: {self._last_error or 'none'}); they were not written"
            )

    def _run(self) -> None:
        q = self._queue
        while True:
            batch: list[LedgerRecord] = []
            barriers: list[_Barrier] = []
            item = q.get()
            # Under load, wait briefly for more records so one commit carries many: a commit per
            # request costs more CPU than the request's own pipeline. A flush or close (barrier)
            # ends the wait at once.
            deadline = time.monotonic() + _LINGER_S
            while True:
                if isinstance(item, _Barrier):
                    barriers.append(item)
                    if item.stop:
                        break  # close() guarantees nothing was enqueued after the stop barrier
                    # Someone waits for this commit: take what is already queued (one commit
                    # for many waiting requests under load) but linger no longer.
                    deadline = 0.0
                else:
                    batch.append(item)
                    if len(batch) >= _BATCH_SIZE:
                        break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = q.get(timeout=remaining)
                    except queue.Empty:
                        break
            if batch and not self._write(batch):
                lost = len(batch) + sum(1 for i in _drain(q) if isinstance(i, LedgerRecord))
                logger.error(
                    "ledger %s closed with %d records that could not be written (last error: %s)",
                    self.path,
                    lost,
                    self._last_error,
                )
                return
            for barrier in barriers:
                barrier.done.set()
                if barrier.notify is not None:
                    barrier.notify()
            if barriers and barriers[-1].stop:
                return

    def _write(self, batch: list[LedgerRecord]) -> bool:
        """Commit ``batch`` in one transaction, retrying until it works or close() gives up."""
        rows = _rows(batch, self.path)
        delay = _RETRY_FIRST_DELAY
        attempt = 0
        while True:
            attempt += 1
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                self._writer.executemany(_INSERT, rows)
                self._writer.execute("COMMIT")
                self._failing = False
                if attempt > 1:
                    logger.info("ledger %s: write succeeded after %d attempts", self.path, attempt)
                return True
            except sqlite3.Error as exc:
                self._last_error = exc
                self._failing = True
                _rollback(self._writer)
                logger.error(
                    "ledger %s: writing %d records failed (attempt %d, retrying in %.2fs): %s",
                    self.path,
                    len(rows),
                    attempt,
                    delay,
                    exc,
                )
            if self._abandon.wait(delay):
                return False
            delay = min(delay * 2, _RETRY_MAX_DELAY)

    # -- reading -------------------------------------------------------------------------------

    def records(self, query: LedgerQuery) -> Iterator[LedgerRecord]:
        """Matching records ordered by ``ts`` then insertion, read lazily in pages."""
        where, params = _where(query)
        # Keyset pagination: no connection or transaction stays open while the caller iterates.
        sql = (
            f"SELECT id, {_COLUMNS} FROM requests WHERE {where} AND (ts_us, id) > (?, ?) "
            f"ORDER BY ts_us, id LIMIT {_PAGE_SIZE}"
        )
        after: tuple[int, int] = (-(2**63), -1)
        while True:
            page = self._read(sql, [*params, *after])
            for row in page:
                yield _from_row(row[1:])
            if len(page) < _PAGE_SIZE:
                return
            after = (page[-1][2], page[-1][0])

    def count(self, query: LedgerQuery) -> int:
        where, params = _where(query)
        rows = self._read(f"SELECT COUNT(*) FROM requests WHERE {where}", params)
        return int(rows[0][0])

    def summarize(self, query: LedgerQuery, group_by: Sequence[str]) -> list[SummaryRow]:
        """Sum requests, errors, cache hits, tokens and money per group, in SQL.

        ``group_by`` is any subset of tenant, route, model, day (UTC "YYYY-MM-DD") and
        status_class ("2xx", "4xx", ...). Rows are ordered by the group keys; no matching records
        gives no rows.
        """
        columns = _check_group_by(group_by)
        keys = [f"{_GROUP_EXPRESSIONS[c]} AS k{i}" for i, c in enumerate(columns)]
        where, params = _where(query)
        select = ", ".join(
            [
                *keys,
                "COUNT(*)",
                "COALESCE(SUM(status >= 400), 0)",
                "COALESCE(SUM(cache_hit), 0)",
                "COALESCE(SUM(prompt_tokens), 0)",
                "COALESCE(SUM(completion_tokens), 0)",
                "COALESCE(SUM(cost_micros), 0)",
                "COALESCE(SUM(large_cost_micros), 0)",
                "COALESCE(SUM(handoff IS NOT NULL), 0)",
            ]
        )
        sql = f"SELECT {select} FROM requests WHERE {where}"
        if columns:
            order = ", ".join(f"k{i}" for i in range(len(columns)))
            sql += f" GROUP BY {order} ORDER BY {order}"
        result: list[SummaryRow] = []
        n = len(columns)
        for row in self._read(sql, params):
            if row[n] == 0:
                continue  # an aggregate without GROUP BY returns one all-zero row for no records
            result.append(
                SummaryRow(
                    key={
                        c: "" if v is None else str(v) for c, v in zip(columns, row, strict=False)
                    },
                    requests=row[n],
                    errors=row[n + 1],
                    cache_hits=row[n + 2],
                    prompt_tokens=row[n + 3],
                    completion_tokens=row[n + 4],
                    cost_micros=row[n + 5],
                    large_cost_micros=row[n + 6],
                    handoffs=row[n + 7],
                )
            )
        return result

    def local_spend(
        self,
        tenants: TenantSet,
        since: datetime,
        until: datetime,
        utc_offset: timedelta,
        columns: Sequence[str],
        *,
        scan: bool = False,
    ) -> list[SummaryRow]:
        """Raw records in ``[since, until)`` summed per ``columns``, "day" shifted by the offset.

        The day is grouped as an integer day number (cheaper than SQLite's ``date()`` per row)
        and turned into "YYYY-MM-DD" here.
        """
        offset_us = utc_offset // _ONE_US
        expressions = {
            **_SPEND_EXPRESSIONS,
            "day": f"(ts_us + {int(offset_us)}) / {_DAY_US}",
        }
        where, params = _tenant_where(tenants)
        where += " AND ts_us >= ? AND ts_us < ?"
        params += [_to_us(since), _to_us(until)]
        # Reading most of the table through an index costs about three times a straight scan.
        table = "requests NOT INDEXED" if scan else "requests"
        rows = self._spend(expressions, table, where, params, columns, _RAW_SUMS)
        if "day" not in columns:
            return rows
        return [
            SummaryRow(
                key={
                    **row.key,
                    "day": (_EPOCH_DAY + timedelta(days=int(row.key["day"]))).isoformat(),
                },
                requests=row.requests,
                errors=row.errors,
                cache_hits=row.cache_hits,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cost_micros=row.cost_micros,
                large_cost_micros=row.large_cost_micros,
                handoffs=row.handoffs,
            )
            for row in rows
        ]

    def aggregated_spend(
        self,
        tenants: TenantSet,
        since: datetime | None,
        until: datetime | None,
        columns: Sequence[str],
    ) -> list[SummaryRow]:
        """Rolled-up days whose first instant is in ``[since, until)``, summed per ``columns``."""
        where, params = _tenant_where(tenants)
        where += _range_where("start_us", since, until, params)
        expressions = {c: c for c in SPEND_COLUMNS}
        return self._spend(expressions, "daily_aggregates", where, params, columns, _ROLLED_SUMS)

    def spend_bounds(self, tenants: TenantSet) -> tuple[datetime, datetime] | None:
        """The first and last ``ts`` of the raw records of ``tenants``; None if there are none."""
        where, params = _tenant_where(tenants)
        [(first, last)] = self._read(
            f"SELECT MIN(ts_us), MAX(ts_us) FROM requests WHERE {where}", params
        )
        if first is None:
            return None
        return _from_us(first), _from_us(last)

    def cascade_outcomes(
        self, tenants: TenantSet, since: datetime | None, until: datetime | None
    ) -> list[SummaryRow]:
        """Records the cascade judged in ``[since, until)``, summed per outcome: raw records,
        and rolled-up days whose first instant is in the range (as ``aggregated_spend``).
        Rows of the same outcome are not merged: the caller sums them."""
        expressions = {"cascade": "cascade"}
        rows: list[SummaryRow] = []
        for table, column, sums in (
            ("requests", "ts_us", _RAW_SUMS),
            ("daily_cascade", "start_us", _CASCADE_ROLLED_SUMS),
        ):
            where, params = _tenant_where(tenants)
            where += " AND cascade IS NOT NULL" + _range_where(column, since, until, params)
            rows += self._spend(expressions, table, where, params, ["cascade"], sums)
        return rows

    def cache_layers(
        self, tenants: TenantSet, since: datetime | None, until: datetime | None
    ) -> list[SummaryRow]:
        """Raw records answered from stored text in ``[since, until)``, summed per layer.

        Raw records only: rolled-up days (``gateway ledger prune``) keep the cache hits' total,
        not their layer.
        """
        where, params = _raw_where(tenants, since, until, "cache_layer")
        expressions = {"cache_layer": "cache_layer"}
        return self._spend(expressions, "requests", where, params, ["cache_layer"], _RAW_SUMS)

    def handoff_reasons(
        self, tenants: TenantSet, since: datetime | None, until: datetime | None
    ) -> dict[str, int]:
        """Raw records with a handoff signal in ``[since, until)``, per reason (most first).

        Raw records only: rolled-up days (``gateway ledger prune``) keep the handoffs' total,
        not their reasons.
        """
        where, params = _raw_where(tenants, since, until, "handoff")
        sql = (
            f"SELECT handoff, COUNT(*) FROM requests WHERE {where} "
            "GROUP BY handoff ORDER BY COUNT(*) DESC, handoff"
        )
        return {str(reason): int(count) for reason, count in self._read(sql, params)}

    def recorded_costs(self, request_ids: Sequence[str]) -> dict[str, int]:
        """``cost_micros`` of each of ``request_ids`` that has a record (for reconciliation)."""
        costs: dict[str, int] = {}
        for start in range(0, len(request_ids), 500):  # SQLite's bound-parameter limit
            chunk = list(request_ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT request_id, cost_micros FROM requests WHERE request_id IN ({marks})"
            costs.update((str(r), int(c)) for r, c in self._read(sql, chunk))
        return costs

    def tenants(self) -> list[str]:
        """Every tenant with raw records, sorted."""
        return [t for (t,) in self._read("SELECT DISTINCT tenant FROM requests ORDER BY 1", [])]

    def roll_up(self, tenant: str, days: Sequence[LocalDay]) -> int:
        """Move each day's raw records of ``tenant`` into ``daily_aggregates``.

        One transaction per day: its sums are added to the day's aggregate rows (so rolling up
        a late record into a day already rolled up adds to it) and its raw records deleted, so a
        report's totals are the same before and after. Returns how many records were moved.
        """
        moved = 0
        conn = self._connect()
        try:
            for day in days:
                window = [tenant, _to_us(day.start), _to_us(day.end)]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    groups = conn.execute(_ROLL_UP_SELECT, window).fetchall()
                    conn.execute(
                        _CASCADE_ROLL_UP,
                        (tenant, day.day, day.time_zone, _to_us(day.start), *window),
                    )
                    conn.executemany(
                        _ROLL_UP_UPSERT,
                        [
                            (tenant, day.day, day.time_zone, _to_us(day.start), *group)
                            for group in groups
                        ],
                    )
                    deleted = conn.execute(
                        "DELETE FROM requests WHERE tenant = ? AND ts_us >= ? AND ts_us < ?",
                        window,
                    ).rowcount
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
                moved += deleted
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot roll up the ledger at {self.path}: {exc}") from exc
        finally:
            conn.close()
        return moved

    def _spend(
        self,
        expressions: Mapping[str, str],
        table: str,
        where: str,
        params: list[Any],
        columns: Sequence[str],
        sums: str,
    ) -> list[SummaryRow]:
        unknown = [c for c in columns if c not in expressions]
        if unknown or len(set(columns)) != len(columns):
            raise ValueError(
                f"spend columns must be distinct names from {', '.join(SPEND_COLUMNS)}; "
                f"got {list(columns)}"
            )
        keys = [f"{expressions[c]} AS k{i}" for i, c in enumerate(columns)]
        sql = f"SELECT {', '.join([*keys, sums])} FROM {table} WHERE {where}"
        if columns:
            sql += f" GROUP BY {', '.join(f'k{i}' for i in range(len(columns)))}"
        n = len(columns)
        result: list[SummaryRow] = []
        for row in self._read(sql, params):
            if not row[n]:
                continue  # an aggregate without GROUP BY returns one row for no records
            result.append(
                SummaryRow(
                    key={
                        c: "" if v is None else str(v) for c, v in zip(columns, row, strict=False)
                    },
                    requests=row[n],
                    errors=row[n + 1],
                    cache_hits=row[n + 2],
                    prompt_tokens=row[n + 3],
                    completion_tokens=row[n + 4],
                    cost_micros=row[n + 5],
                    large_cost_micros=row[n + 6],
                    handoffs=row[n + 7],
                )
            )
        return result

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._reader_lock:
            if self._closed:
                raise LedgerError(f"the ledger at {self.path} is closed")
            if self._reader is None:
                self._reader = self._connect()
                self._reader.execute("PRAGMA query_only=ON")
            return self._reader.execute(sql, params).fetchall()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        return conn


def _check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    if isinstance(group_by, str):
        raise ValueError(
            f"group_by must be a sequence of column names, not the string {group_by!r}"
        )
    columns = tuple(group_by)
    unknown = [c for c in columns if c not in _GROUP_EXPRESSIONS]
    if unknown:
        raise ValueError(
            f"cannot group by {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(GROUP_BY_COLUMNS)}"
        )
    if len(set(columns)) != len(columns):
        raise ValueError(f"group_by lists a column twice: {list(columns)}")
    return columns


def _rows(batch: Sequence[LedgerRecord], path: Path) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for rec in batch:
        try:
            rows.append(_to_row(rec))
        except Exception:
            # A record that cannot be converted never will be; retrying would wedge the queue.
            logger.exception("ledger %s: dropping unwritable record %r", path, rec)
    return rows


def _drain(q: queue.SimpleQueue[LedgerRecord | _Barrier]) -> Iterator[LedgerRecord | _Barrier]:
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations not yet recorded in ``schema_migrations``, each in a transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    applied = {name for (name,) in conn.execute("SELECT name FROM schema_migrations")}
    for name, sql in MIGRATIONS:
        if name in applied:
            continue
        # BEGIN IMMEDIATE takes the write lock, so a second process opening the same file at the
        # same moment waits here and then sees the migration as applied.
        conn.execute("BEGIN IMMEDIATE")
        try:
            exists = conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,))
            if exists.fetchone() is None:
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                    (name, datetime.now(UTC).isoformat()),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # SQLite may already have rolled back on its own (e.g. SQLITE_FULL); nothing to undo.
            logger.debug("ledger rollback failed", exc_info=True)
