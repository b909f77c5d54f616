"""``SqliteLedger.when_committed`` and ``failing``: what the ledger stage's wait stands on."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from gateway.ledger import SqliteLedger
from tests.unit.test_ledger import make_record


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with SqliteLedger(tmp_path / "ledger.sqlite3", busy_timeout_ms=100) as led:
        yield led


def _ids_seen_by_another_connection(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM requests ORDER BY id")]


def test_when_committed_fires_after_the_record_is_visible_to_another_connection(
    ledger: SqliteLedger,
) -> None:
    seen: list[list[str]] = []
    done = threading.Event()

    def notify() -> None:
        seen.append(_ids_seen_by_another_connection(ledger.path))
        done.set()

    ledger.record(make_record(request_id="a"))
    ledger.record(make_record(request_id="b"))
    ledger.when_committed(notify)
    assert done.wait(10)
    assert seen == [["a", "b"]]


def test_many_waiters_are_all_notified_and_share_commits(ledger: SqliteLedger) -> None:
    events = []
    for i in range(200):
        ledger.record(make_record(request_id=f"r{i}"))
        event = threading.Event()
        ledger.when_committed(event.set)
        events.append(event)
    assert all(e.wait(10) for e in events)
    assert len(_ids_seen_by_another_connection(ledger.path)) == 200


def test_on_a_closed_ledger_when_committed_notifies_at_once(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    ledger.close()
    called: list[bool] = []
    ledger.when_committed(lambda: called.append(True))
    assert called == [True]


def test_failing_while_the_file_is_locked_and_not_once_the_lock_is_gone(
    ledger: SqliteLedger,
) -> None:
    assert not ledger.failing
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        done = threading.Event()
        ledger.record(make_record(request_id="locked-out"))
        ledger.when_committed(done.set)
        # busy_timeout is 100 ms: the first attempt fails, and the writer keeps retrying.
        deadline = time.monotonic() + 10
        while not ledger.failing and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ledger.failing
        assert not done.is_set()  # nothing committed while the lock is held
        holder.execute("COMMIT")
        assert done.wait(10)
    finally:
        holder.close()
    assert not ledger.failing
    assert _ids_seen_by_another_connection(ledger.path) == ["locked-out"]


# -- commit_soon: the request path's commit on the event loop ---------------------------------


async def test_commit_soon_resolves_once_the_record_is_visible_to_another_connection(
    ledger: SqliteLedger,
) -> None:
    first = ledger.commit_soon(make_record(request_id="a"))
    second = ledger.commit_soon(make_record(request_id="b"))
    assert not first.done()  # committed right after this loop iteration, both in one transaction
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert _ids_seen_by_another_connection(ledger.path) == ["a", "b"]


async def test_commit_soon_hands_records_to_the_writer_while_the_file_is_locked(
    ledger: SqliteLedger,
) -> None:
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process writing: the loop cannot commit
        done = ledger.commit_soon(make_record(request_id="waits"))
        await asyncio.sleep(0.3)
        assert not done.done()  # queued for the writer, which keeps retrying
        holder.execute("ROLLBACK")
        await asyncio.wait_for(done, 10)
    finally:
        holder.close()
    assert _ids_seen_by_another_connection(ledger.path) == ["waits"]


async def test_commits_on_the_loop_keep_the_wal_bounded(ledger: SqliteLedger) -> None:
    # A record a commit writes 3 to 4 pages: 3,000 unbounded would leave a ~40 MB WAL file.
    for i in range(3000):
        await ledger.commit_soon(make_record(request_id=f"r{i}"))
    wal = ledger.path.with_name(ledger.path.name + "-wal")
    assert wal.stat().st_size < 8 * 1024 * 1024
    assert len(_ids_seen_by_another_connection(ledger.path)) == 3000


async def test_flush_covers_records_still_waiting_for_the_loop(ledger: SqliteLedger) -> None:
    done = ledger.commit_soon(make_record(request_id="pending"))
    ledger.flush()  # before the loop ran its commit: flush hands it to the writer and waits
    assert _ids_seen_by_another_connection(ledger.path) == ["pending"]
    await asyncio.wait_for(done, 10)
