"""With state: redis, every process's ledger records reach one ledger through the Redis stream."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from gateway.ledger import LedgerQuery, LedgerRecord, SqliteLedger
from gateway.ledger_stream import LedgerRelay, pull, stream_key
from tests.support.budget_config import REDIS_URL, budget_config, redis_prefix, redis_state
from tests.support.gateway_server import ACME_KEY, gateway_env
from tests.support.mock_upstream import MockUpstream
from tests.support.served import GATEWAY, REPO, serving


def record(i: int, *, text: str | None = None, tenant: str = "acme") -> LedgerRecord:
    return LedgerRecord(
        request_id=f"req-{i}",
        ts=datetime(2026, 11, 26, 10, i % 60, tzinfo=UTC),
        tenant=tenant,
        requested_model="auto",
        route="small",
        model="mock-small",
        prompt_tokens=10 + i,
        completion_tokens=5,
        cost_micros=100 + i,
        large_cost_micros=1000 + i,
        latency_ms=1.5,
        status=200,
        stream=False,
        reasons=("no rule matched: default tier",),
        features={"prompt_tokens": 10 + i, "difficulty": 0.2},
        request_text=text,
    )


def write(path: Path, records: list[LedgerRecord]) -> None:
    with SqliteLedger(path) as ledger:
        for rec in records:
            ledger.record(rec)
        ledger.flush()


def read(path: Path) -> list[LedgerRecord]:
    with SqliteLedger(path) as ledger:
        return list(ledger.records(LedgerQuery()))


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def test_relay_and_pull_carry_every_record_once_without_customer_text(
    tmp_path: Path, client: redis.Redis
) -> None:
    source, target = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    originals = [record(i, text="my parcel 12345") for i in range(7)]
    write(source, originals)
    SqliteLedger(target).close()
    with redis_prefix() as prefix:
        relay = LedgerRelay(source, client, prefix)
        assert relay.relay_once() == 7
        assert relay.relay_once() == 0, "the cursor moved past what was sent"
        result = pull(client, prefix, target)
        assert (result.read, result.stored, result.duplicates) == (7, 7, 0)
        assert client.xlen(stream_key(prefix)) == 0, "stored entries are trimmed from the stream"
        pulled = read(target)
    assert [r.request_id for r in pulled] == [r.request_id for r in originals]
    assert all(r.request_text is None for r in pulled), "customer text stays where it was served"
    strip = [{**{f: getattr(r, f) for f in r.__slots__}, "request_text": None} for r in originals]
    assert [{f: getattr(r, f) for f in r.__slots__} for r in pulled] == strip


def test_a_batch_sent_twice_is_stored_once(tmp_path: Path, client: redis.Redis) -> None:
    source, target = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    write(source, [record(i) for i in range(3)])
    SqliteLedger(target).close()
    with redis_prefix() as prefix:
        LedgerRelay(source, client, prefix).relay_once()
        # A crash between XADD and the cursor update: the next relay sends the batch again.
        with sqlite3.connect(source) as conn:
            conn.execute("DELETE FROM stream_cursors")
        LedgerRelay(source, client, prefix).relay_once()
        result = pull(client, prefix, target)
    assert (result.read, result.stored, result.duplicates) == (6, 3, 3)
    assert len(read(target)) == 3


def test_records_written_while_redis_is_down_are_sent_when_it_answers(
    tmp_path: Path, client: redis.Redis
) -> None:
    source = tmp_path / "a.sqlite3"
    write(source, [record(i) for i in range(4)])
    with redis_prefix() as prefix:
        down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        with pytest.raises(redis.ConnectionError):
            LedgerRelay(source, down, prefix).relay_once()
        assert LedgerRelay(source, client, prefix).relay_once() == 4
        assert client.xlen(stream_key(prefix)) == 4


def test_two_gateway_processes_report_as_one_after_ledger_pull(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        **gateway_env(upstream.base_url),
    }
    tenants = "  acme:\n    keys: [{ env: ACME_KEY }]\n"
    with redis_prefix() as prefix:
        config = tmp_path / "gateway.yaml"
        config.write_text(budget_config(tenants, extra=redis_state(prefix)), "utf-8")
        answered = 0
        with (
            serving(tmp_path / "a", tmp_path / "a.log", env, config=config) as first,
            serving(tmp_path / "b", tmp_path / "b.log", env, config=config) as second,
        ):
            for i in range(10):
                served = first if i % 2 else second
                response = httpx.post(
                    f"{served.url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {ACME_KEY}"},
                    json={"model": "auto", "messages": [{"role": "user", "content": f"hi {i}"}]},
                    timeout=10,
                )
                assert response.status_code == 200, response.text
                answered += 1
        # Both stopped (SIGTERM): each relayed what was left before exiting.
        finance = tmp_path / "finance"
        pulled = subprocess.run(
            [
                str(GATEWAY),
                "ledger",
                "pull",
                "--redis-url",
                REDIS_URL,
                "--key-prefix",
                prefix,
                "--data-dir",
                str(finance),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert f"{answered} new records" in pulled.stderr
    local = sum(len(read(tmp_path / d / "ledger.sqlite3")) for d in ("a", "b"))
    report = subprocess.run(
        [
            str(GATEWAY),
            "report",
            "--data-dir",
            str(finance),
            "--format",
            "json",
            "--group-by",
            "tenant",
            "--tz",
            "UTC",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert report.returncode == 0, report.stderr
    body = json.loads(report.stdout)
    assert local == answered
    assert body["total"]["requests"] == answered, body
