"""The embedded budget store: one SQLite file in WAL mode, safe for several processes on one host.

Atomicity: every operation is one transaction opened with ``BEGIN IMMEDIATE``, which takes the
database's write lock before reading anything. While one process holds it, every other process's
``BEGIN IMMEDIATE`` waits (up to ``busy_timeout_ms``), so the check of every scope and the deduction
from all of them happen with no other writer in between. The deduction itself is also a
conditional statement (``UPDATE ... SET reserved = reserved + ? WHERE settled + reserved + ? <=
limit``), so even the single statement cannot overshoot; a refusal rolls the whole transaction
back, leaving no scope charged.

Where the calls run: each operation is one short transaction (30 to 40 µs of CPU here), less
than handing it to a thread and waking the event loop again costs (about 55 µs per hop, three
hops per request: docs/benchmarks.md). So an operation first runs **on the event loop**, on a
connection with no busy wait: if another connection holds the write lock (another worker
process, the reaper) it fails at once with SQLITE_BUSY, having changed nothing, and runs again
in the store's own thread, on a connection that waits up to ``busy_timeout_ms``. The loop never
waits for a lock. The reaper's longer transaction always runs in the thread.

``synchronous=NORMAL``: a power cut may lose the last transactions of the counters, never corrupt
them; the ledger stays the record of what was spent, and counters reconcile against it.

A cancelled call whose transaction already started still completes in the thread; a reservation
the caller never learned of is released by ``reap_expired`` after its TTL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gateway.budget.store import (
    DEFAULT_COUNTER_RETENTION_S,
    DEFAULT_TOMBSTONE_S,
    BudgetBackendError,
    DuplicateReservation,
    RateHit,
    RateResult,
    ReserveResult,
    Scope,
    ScopeState,
    check_amount,
    unique_keys,
    window_bounds,
)

__all__ = ["MIGRATIONS", "SqliteBudgetStore"]

log = logging.getLogger("gateway.budget")

T = TypeVar("T")

# Named, ordered, append-only: never edit one that has shipped, add a new one.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_create_budget_counters",
        """
        CREATE TABLE budget_counters (
            key        TEXT    PRIMARY KEY,
            settled    INTEGER NOT NULL DEFAULT 0,
            reserved   INTEGER NOT NULL DEFAULT 0,
            -- unix seconds after which the counter may be dropped (0: kept for good)
            expires_at INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID
        """,
    ),
    (
        "0002_create_budget_reservations",
        """
        CREATE TABLE budget_reservations (
            id         TEXT    PRIMARY KEY,
            amount     INTEGER NOT NULL,
            scopes     TEXT    NOT NULL,  -- JSON list of counter keys
            state      TEXT    NOT NULL,  -- 'open', or 'expired' (a tombstone, amount 0)
            expires_at REAL    NOT NULL   -- open: when reap releases it; expired: when dropped
        ) WITHOUT ROWID
        """,
    ),
    (
        "0003_index_budget_reservations_expiry",
        "CREATE INDEX budget_reservations_expiry ON budget_reservations (state, expires_at)",
    ),
    (
        "0004_create_rate_windows",
        """
        CREATE TABLE rate_windows (
            key        TEXT    PRIMARY KEY,
            window     INTEGER NOT NULL,
            used       INTEGER NOT NULL,
            expires_at REAL    NOT NULL
        ) WITHOUT ROWID
        """,
    ),
]

_MIGRATIONS_TABLE = "budget_schema_migrations"

# SQLITE_BUSY, SQLITE_LOCKED (primary codes): another connection holds the lock.
_BUSY_CODES = frozenset({5, 6})


class SqliteBudgetStore:
    """Budget counters, reservations and rate windows in the SQLite file at ``path``.

    Several processes may open the same file (uvicorn workers); each store instance owns one
    connection and one thread. ``busy_timeout_ms`` bounds how long an operation waits for
    another process's write lock before it fails with ``BudgetBackendError``.
    """

    backend_name = "SQLite"

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_ms: int = 5000,
        counter_retention_s: float = DEFAULT_COUNTER_RETENTION_S,
        tombstone_s: float = DEFAULT_TOMBSTONE_S,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._retention_s = counter_retention_s
        self._tombstone_s = tombstone_s
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="gateway-budget-sqlite"
        )
        self._conn: sqlite3.Connection | None = None
        # The event loop's connection (no busy wait), opened on first use by the thread that
        # uses it; a call from any other thread goes through the executor.
        self._inline: sqlite3.Connection | None = None
        self._inline_thread: int | None = None
        self._closed = False
        self._close_lock = threading.Lock()
        try:
            # Opened in the store's own thread: the connection never leaves it.
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    # -- plumbing --------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise BudgetBackendError(
                f"cannot open the budget database at {self.path}: {exc}; check that the data "
                "directory exists and is writable"
            ) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            _migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise BudgetBackendError(
                f"cannot prepare the budget database at {self.path}: {exc}"
            ) from exc
        self._conn = conn

    async def _run(self, fn: Callable[..., T], *args: object, inline: bool = True) -> T:
        """Run ``fn(conn, *args)`` on the loop's connection, or in the store's thread when the
        database is locked (or ``inline`` is False); sqlite3 failures become
        ``BudgetBackendError`` here and nowhere else."""
        if self._closed:
            raise BudgetBackendError(f"the budget store at {self.path} is closed")
        if inline:
            conn = self._inline_conn()
            if conn is not None:
                try:
                    return fn(conn, *args)
                except sqlite3.Error as exc:
                    # Every operation is one transaction rolled back on failure: a locked
                    # database changed nothing, so running it again in the thread is safe.
                    if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY_CODES:
                        raise BudgetBackendError(
                            f"budget database {self.path}: {type(exc).__name__}: {exc}"
                        ) from exc
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(self._call, fn, *args)
            )
        except sqlite3.Error as exc:
            raise BudgetBackendError(
                f"budget database {self.path}: {type(exc).__name__}: {exc}"
            ) from exc
        except RuntimeError as exc:  # executor shut down by a concurrent aclose()
            if self._closed:
                raise BudgetBackendError(f"the budget store at {self.path} is closed") from exc
            raise

    def _inline_conn(self) -> sqlite3.Connection | None:
        """The calling thread's no-wait connection, or None when it is not the loop's thread
        (or it cannot be opened: the thread's connection then reports the problem)."""
        me = threading.get_ident()
        if self._inline is not None:
            return self._inline if self._inline_thread == me else None
        if self._inline_thread is not None:
            return None  # opening it failed once; the thread path reports why
        self._inline_thread = me
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA synchronous=NORMAL")
            # SQLite's own checkpoint (every 1,000 pages of WAL) runs on this connection, a
            # few ms now and then: from the store's thread, with the loop writing all the
            # time, a passive one never catches up and the WAL grows without end.
        except sqlite3.Error:
            log.debug("budget store: no connection on the event loop", exc_info=True)
            return None
        self._inline = conn
        return conn

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        conn = self._conn
        if conn is None:
            raise BudgetBackendError(f"the budget store at {self.path} is closed")
        return fn(conn, *args)

    # -- budgets ---------------------------------------------------------------------------------

    async def reserve(
        self,
        reservation_id: str,
        scopes: Sequence[Scope],
        amount_micros: int,
        ttl_s: float,
        *,
        now: float | None = None,
    ) -> ReserveResult:
        check_amount("amount_micros", amount_micros)
        unique_keys([s.key for s in scopes], "scope key")
        at = time.time() if now is None else now
        return await self._run(self._reserve, reservation_id, scopes, amount_micros, at + ttl_s)

    def _reserve(
        self,
        conn: sqlite3.Connection,
        reservation_id: str,
        scopes: tuple[Scope, ...],
        amount: int,
        expires_at: float,
    ) -> ReserveResult:
        conn.execute("BEGIN IMMEDIATE")
        try:
            states: list[ScopeState] = []
            for scope in scopes:
                keep_until = scope.expires_at + int(self._retention_s) if scope.expires_at else 0
                limit = scope.limit_micros
                # One statement per scope: create the counter or charge it, only while the sum
                # stays within the limit (no row comes back when it would not).
                row = conn.execute(
                    "INSERT INTO budget_counters (key, reserved, expires_at) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (key) DO UPDATE SET reserved = reserved + ?2, "
                    "expires_at = MAX(expires_at, ?3) "
                    "WHERE ?4 IS NULL OR settled + reserved + ?2 <= ?4 "
                    "RETURNING settled + reserved",
                    (scope.key, amount, keep_until, limit),
                ).fetchone()
                if row is None:
                    (spent,) = conn.execute(
                        "SELECT settled + reserved FROM budget_counters WHERE key = ?",
                        (scope.key,),
                    ).fetchone()
                elif limit is not None and row[0] > limit:
                    spent = int(row[0]) - amount  # a new counter: the amount alone is too much
                else:
                    states.append(ScopeState(scope, int(row[0])))
                    continue
                conn.execute("ROLLBACK")
                blocked = ScopeState(scope, int(spent))
                # The earlier scopes' charges were rolled back: report them without it.
                before = [ScopeState(s.scope, s.spent_micros - amount) for s in states]
                return ReserveResult(ok=False, scopes=(*before, blocked), blocked=blocked)
            try:
                conn.execute(
                    "INSERT INTO budget_reservations (id, amount, scopes, state, expires_at) "
                    "VALUES (?, ?, ?, 'open', ?)",
                    (reservation_id, amount, json.dumps([s.key for s in scopes]), expires_at),
                )
            except sqlite3.IntegrityError:
                raise DuplicateReservation(
                    f"reservation {reservation_id!r} exists; use a fresh id (the request id)"
                ) from None
            conn.execute("COMMIT")
            return ReserveResult(ok=True, scopes=tuple(states))
        except BaseException:
            _rollback(conn)
            raise

    async def settle(self, reservation_id: str, actual_micros: int) -> bool:
        check_amount("actual_micros", actual_micros)
        return await self._run(self._finish, reservation_id, actual_micros)

    async def release(self, reservation_id: str) -> bool:
        return await self._run(self._finish, reservation_id, 0)

    def _finish(self, conn: sqlite3.Connection, reservation_id: str, actual: int) -> bool:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "DELETE FROM budget_reservations WHERE id = ? RETURNING amount, scopes",
                (reservation_id,),
            ).fetchone()
            if row is None:
                conn.execute("COMMIT")
                return False
            amount, scopes = int(row[0]), json.loads(row[1])
            # An upsert: an expired reservation's counter may have been dropped meanwhile.
            conn.executemany(
                "INSERT INTO budget_counters (key, settled, reserved) VALUES (?1, ?2, 0) "
                "ON CONFLICT (key) DO UPDATE SET settled = settled + ?2, reserved = reserved - ?3",
                [(key, actual, amount) for key in scopes],
            )
            conn.execute("COMMIT")
            return True
        except BaseException:
            _rollback(conn)
            raise

    async def spent(self, scope_key: str) -> int:
        return await self._run(self._read, scope_key, "settled + reserved")

    async def settled(self, scope_key: str) -> int:
        return await self._run(self._read, scope_key, "settled")

    @staticmethod
    def _read(conn: sqlite3.Connection, key: str, expression: str) -> int:
        row = conn.execute(
            f"SELECT {expression} FROM budget_counters WHERE key = ?", (key,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    async def open_reservations(self, limit: int = 10_000) -> list[str]:
        return await self._run(self._open_ids, limit)

    @staticmethod
    def _open_ids(conn: sqlite3.Connection, limit: int) -> list[str]:
        rows = conn.execute(
            "SELECT id FROM budget_reservations WHERE state = 'open' LIMIT ?", (limit,)
        ).fetchall()
        return [str(r[0]) for r in rows]

    async def reap_expired(self, now: float | None = None) -> int:
        return await self._run(self._reap, time.time() if now is None else now, inline=False)

    def _reap(self, conn: sqlite3.Connection, now: float) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "DELETE FROM budget_reservations WHERE state = 'expired' AND expires_at <= ?",
                (now,),
            )
            expired = conn.execute(
                "SELECT id, amount, scopes FROM budget_reservations "
                "WHERE state = 'open' AND expires_at <= ?",
                (now,),
            ).fetchall()
            for reservation_id, amount, scopes in expired:
                for key in json.loads(scopes):
                    conn.execute(
                        "UPDATE budget_counters SET reserved = reserved - ? WHERE key = ?",
                        (amount, key),
                    )
                # Kept as a tombstone with nothing reserved, so a late settle still counts.
                conn.execute(
                    "UPDATE budget_reservations SET state = 'expired', amount = 0, "
                    "expires_at = ? WHERE id = ?",
                    (now + self._tombstone_s, reservation_id),
                )
            conn.execute(
                "DELETE FROM budget_counters WHERE expires_at > 0 AND expires_at <= ? "
                "AND reserved = 0",
                (now,),
            )
            conn.execute("DELETE FROM rate_windows WHERE expires_at <= ?", (now,))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if expired:
            log.warning(
                "released %d budget reservation(s) past their TTL (a process died or hung "
                "between reserve and settle)",
                len(expired),
            )
        return len(expired)

    # -- rate limits -----------------------------------------------------------------------------

    async def hit(
        self,
        counter_key: str,
        limit: int,
        window_s: float,
        amount: int = 1,
        *,
        now: float | None = None,
    ) -> RateResult:
        (result,) = await self.hit_many([RateHit(counter_key, limit, window_s, amount)], now=now)
        return result

    async def hit_many(
        self, hits: Sequence[RateHit], *, now: float | None = None
    ) -> tuple[RateResult, ...]:
        unique_keys([h.counter_key for h in hits], "counter_key")
        at = time.time() if now is None else now
        return await self._run(self._hit_many, tuple(hits), at)

    @staticmethod
    def _hit_many(
        conn: sqlite3.Connection, hits: tuple[RateHit, ...], now: float
    ) -> tuple[RateResult, ...]:
        windows = [window_bounds(now, h.window_s) for h in hits]
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Count each hit in one statement (a new window starts from this hit), then keep
            # the transaction only if every counter stayed within its limit.
            used: list[int] = []
            for hit, (index, reset_s) in zip(hits, windows, strict=True):
                (after,) = conn.execute(
                    "INSERT INTO rate_windows (key, window, used, expires_at) "
                    "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO UPDATE SET "
                    "used = CASE WHEN window = ?2 THEN used + ?3 ELSE ?3 END, "
                    "window = ?2, expires_at = ?4 RETURNING used",
                    (hit.counter_key, index, hit.amount, now + reset_s),
                ).fetchone()
                used.append(int(after))
            fits = [u <= h.limit for u, h in zip(used, hits, strict=True)]
            if all(fits):
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")  # a refused hit counts nothing, in any window
                used = [u - h.amount for u, h in zip(used, hits, strict=True)]
        except BaseException:
            _rollback(conn)
            raise
        return tuple(
            RateResult(allowed=ok, limit=h.limit, remaining=max(0, h.limit - u), reset_s=w[1])
            for ok, h, u, w in zip(fits, hits, used, windows, strict=True)
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_conn)
        self._executor.shutdown(wait=True)
        inline, self._inline = self._inline, None
        if inline is not None:
            if self._inline_thread == threading.get_ident():
                inline.close()
            else:  # another thread's connection: closing it here is not allowed; let it go
                log.debug("budget store: the event loop's connection is left to the collector")

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("budget rollback failed", exc_info=True)


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations not yet recorded, each in its own write transaction."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    applied = {name for (name,) in conn.execute(f"SELECT name FROM {_MIGRATIONS_TABLE}")}
    for name, sql in MIGRATIONS:
        if name in applied:
            continue
        # BEGIN IMMEDIATE: a second process migrating at the same moment waits, then skips.
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                f"SELECT 1 FROM {_MIGRATIONS_TABLE} WHERE name = ?", (name,)
            ).fetchone()
            if done is None:
                conn.execute(sql)
                conn.execute(
                    f"INSERT INTO {_MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
                    (name, datetime.now(UTC).isoformat()),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
