"""Several gateway processes, one spend ledger: a Redis stream fed from each local ledger.

Where the durable records live with ``state: redis``:

1. Every process writes its own SQLite ledger in its data directory first, as with
   ``state: embedded``: a request's record never waits on, or is lost to, a Redis outage.
2. A relay thread per process (:class:`LedgerRelay`) reads the records added to that file since
   its cursor (kept in the file, table ``stream_cursors``) and appends them to the stream
   ``<key_prefix>ledger`` (``XADD``), then advances the cursor. If Redis is down it retries with
   back-off from the same cursor, so a record reaches the stream late, never not at all. A crash
   between ``XADD`` and the cursor update sends a batch twice; the consumer drops repeats by
   request id.
3. ``gateway ledger pull`` (:func:`pull`) reads the stream into one SQLite ledger (any data
   directory, e.g. the finance host's), skipping request ids it already has, and trims what it
   has stored from the stream. ``gateway report``, ``/admin/reports`` and ``gateway ledger
   export`` then work on the whole organisation's spend.

The stream carries every ledger column but ``request_text``: customer text stays in the data
directory of the process that served it (and only when the tenant stores it at all).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from gateway.ledger import LEDGER_COLUMNS

log = logging.getLogger("gateway.ledger_stream")

STREAM_SUFFIX = "ledger"
_TEXT_COLUMN = LEDGER_COLUMNS.index("request_text")
_BATCH = 500


def stream_key(key_prefix: str) -> str:
    return f"{key_prefix}{STREAM_SUFFIX}"


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _cursor(conn: sqlite3.Connection, name: str, default: str) -> str:
    row = conn.execute("SELECT position FROM stream_cursors WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row else default


def _set_cursor(conn: sqlite3.Connection, name: str, position: str) -> None:
    conn.execute(
        "INSERT INTO stream_cursors (name, position) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        (name, position),
    )


class LedgerRelay:
    """Copies a local ledger's new records to the Redis stream, in a daemon thread."""

    def __init__(
        self,
        ledger_path: Path,
        client: redis.Redis,
        key_prefix: str,
        *,
        interval_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.ledger_path = ledger_path
        self.client = client
        self.stream = stream_key(key_prefix)
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.relayed = 0
        self._cursor_name = f"relay:{self.stream}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-ledger-relay", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Relay now rather than at the next interval (e.g. after a flush)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Relay what is left (if Redis answers), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def relay_once(self) -> int:
        """Send every record past the cursor; returns how many. Raises redis errors."""
        conn = _connect(self.ledger_path)
        try:
            sent = 0
            while True:
                after = int(_cursor(conn, self._cursor_name, "0"))
                rows = conn.execute(
                    f"SELECT id, {', '.join(LEDGER_COLUMNS)} FROM requests WHERE id > ? "
                    f"ORDER BY id LIMIT {_BATCH}",
                    (after,),
                ).fetchall()
                if not rows:
                    return sent
                pipe = self.client.pipeline(transaction=False)
                for row in rows:
                    values = list(row[1:])
                    values[_TEXT_COLUMN] = None  # customer text never leaves the data directory
                    pipe.xadd(self.stream, {"r": json.dumps(values, ensure_ascii=False)})
                pipe.execute()
                _set_cursor(conn, self._cursor_name, str(rows[-1][0]))
                sent += len(rows)
                self.relayed += len(rows)
        finally:
            conn.close()

    def _run(self) -> None:
        backoff = self.interval_s
        while True:
            try:
                self.relay_once()
                backoff = self.interval_s
            except (redis.RedisError, OSError) as exc:
                log.warning(
                    "ledger relay to Redis stream %s failed (%s); records stay in %s and are "
                    "sent when Redis answers (retry in %.0f s)",
                    self.stream,
                    exc,
                    self.ledger_path,
                    backoff,
                )
                backoff = min(backoff * 2, self.max_backoff_s)
            except sqlite3.Error as exc:
                log.warning("ledger relay cannot read %s: %s", self.ledger_path, exc)
                backoff = min(backoff * 2, self.max_backoff_s)
            if self._stop.is_set():
                return
            self._wake.wait(backoff)
            self._wake.clear()


@dataclass(frozen=True, slots=True)
class PullResult:
    read: int
    stored: int
    duplicates: int
    trimmed: bool


_INSERT_NEW = (
    f"INSERT INTO requests ({', '.join(LEDGER_COLUMNS)}) "
    f"SELECT {', '.join('?' * len(LEDGER_COLUMNS))} "
    "WHERE NOT EXISTS (SELECT 1 FROM requests WHERE request_id = ?)"
)


def pull(
    client: redis.Redis,
    key_prefix: str,
    ledger_path: Path,
    *,
    trim: bool = True,
    progress: Callable[[int], None] | None = None,
) -> PullResult:
    """Store the stream's records in the ledger at ``ledger_path`` (created and migrated by the
    caller), skipping request ids it already holds; then trim the stored part of the stream."""
    stream = stream_key(key_prefix)
    name = f"pull:{stream}"
    conn = _connect(ledger_path)
    read = stored = 0
    try:
        last = _cursor(conn, name, "0-0")
        while True:
            entries: Any = client.xrange(stream, min=f"({last}", count=_BATCH)
            if not entries:
                break
            conn.execute("BEGIN IMMEDIATE")
            try:
                for entry_id, fields in entries:
                    raw = fields.get(b"r") or fields.get("r")
                    values = json.loads(raw)
                    if len(values) != len(LEDGER_COLUMNS):
                        raise ValueError(
                            f"stream entry {entry_id!r} has {len(values)} columns, expected "
                            f"{len(LEDGER_COLUMNS)}: written by another gateway version?"
                        )
                    cur = conn.execute(_INSERT_NEW, (*values, values[0]))
                    stored += cur.rowcount
                last = _text(entries[-1][0])
                _set_cursor(conn, name, last)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            read += len(entries)
            if progress is not None:
                progress(read)
        trimmed = False
        if trim and last != "0-0":
            # Everything up to `last` is committed here; the stream need not keep it.
            client.xtrim(stream, minid=_next_id(last))
            trimmed = True
        return PullResult(read=read, stored=stored, duplicates=read - stored, trimmed=trimmed)
    finally:
        conn.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"
