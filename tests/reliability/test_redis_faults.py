"""``state: redis`` with Redis missing at start, hanging mid-run and coming back.

A private ``redis-server`` on a free port (so the shared one at 6379 is never disturbed) is
started late, frozen with SIGSTOP (a server that accepts but never answers: every call times
out) and thawed with SIGCONT. The rule asserted, from docs/budgets.md and docs/reliability.md:
budgets that fail closed refuse with 503 ``budget_store_unavailable``; budgets that fail open
serve with a warning header and are not counted; the response cache misses; nothing is an
error the client did not ask for, and when Redis answers again everything works without a
restart. The Redis counters then equal the ledger, except exactly the unmetered answers.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.budget import RedisBudgetStore
from tests.reliability.gateway_process import (
    CLOSED_KEY,
    OPEN_KEY,
    gateway_env,
    running,
    wait_until,
    write_config,
)
from tests.reliability.ledger_reads import day_scope, ledger_rows
from tests.support.mock_upstream import MockUpstream, free_port

WARNING = "x-switchboard-budget-warning"


class PrivateRedis:
    """``redis-server`` on its own port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, "redis-server to answer PING")
        client.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: this test runs a private one it can stop")
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.stop()


def _ask(client: openai.OpenAI, text: str) -> tuple[int, dict[str, str], str | None]:
    """(status, headers, error code) of one chat request; never retried."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}]
        )
    except openai.APIStatusError as exc:
        body: Any = exc.body
        code = body.get("code") if isinstance(body, dict) else None
        return exc.status_code, dict(exc.response.headers), code
    raw.parse()
    return raw.status_code, dict(raw.headers), None


def _settled(url: str, tenant: str) -> int:
    async def read() -> int:
        store = RedisBudgetStore(url, "reliability:")
        try:
            return await store.settled(day_scope(tenant))
        finally:
            await store.aclose()

    return asyncio.run(read())


def test_redis_away_at_start_and_hanging_mid_run_degrades_by_the_rules_and_recovers(
    upstream: MockUpstream, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "gateway.yaml")
    env = gateway_env(upstream.base_url, STATE="redis", REDIS_URL=private_redis.url, CACHE="true")
    served: dict[str, list[tuple[str, dict[str, str]]]] = {"closed": [], "open": []}
    with running(config, tmp_path / "data", env) as gw:
        closed = openai.OpenAI(base_url=gw.v1, api_key=CLOSED_KEY, max_retries=0, timeout=20)
        opened = openai.OpenAI(base_url=gw.v1, api_key=OPEN_KEY, max_retries=0, timeout=20)

        def check_down(phase: str) -> None:
            status, headers, code = _ask(closed, f"closed tenant, {phase}")
            assert (status, code) == (503, "budget_store_unavailable"), phase
            assert int(headers["retry-after"]) >= 1
            # Fails open: served, says so, and the cache (also in Redis) simply misses.
            before = len(upstream.history)
            for _ in range(2):
                status, headers, code = _ask(opened, f"open tenant, {phase}")
                assert (status, code) == (200, None), phase
                assert "not enforced" in headers[WARNING], headers
                served["open"].append((headers["x-switchboard-request-id"], headers))
            assert len(upstream.history) == before + 2, "a cache miss reaches the upstream"

        def check_up(phase: str) -> None:
            def closed_served() -> bool:
                status, headers, _ = _ask(closed, f"closed tenant, {phase}")
                if status == 200:
                    served["closed"].append((headers["x-switchboard-request-id"], headers))
                return status == 200

            # The store refuses at once for a second after a failure, then tries Redis again.
            wait_until(closed_served, f"the closed tenant to be served ({phase})")
            for tenant_client, tenant in ((closed, "closed"), (opened, "open")):

                def cache_hit(client: openai.OpenAI = tenant_client, name: str = tenant) -> bool:
                    status, headers, _ = _ask(client, f"{name} tenant cached, {phase}")
                    assert status == 200 and WARNING not in headers, phase
                    served[name].append((headers["x-switchboard-request-id"], headers))
                    return headers["x-switchboard-route"] == "cache"

                # The cache store stays off for 5 s after a failure, then hits again.
                wait_until(cache_hit, f"a cache hit for tenant {tenant} ({phase})")

        check_down("Redis not started")  # connection refused
        private_redis.start()
        check_up("Redis started")
        private_redis.signal(signal.SIGSTOP)  # accepts, never answers: calls time out
        check_down("Redis hanging")
        private_redis.signal(signal.SIGCONT)
        check_up("Redis back")
        assert gw.terminate() in (0, -signal.SIGTERM)

    rows = {r.request_id: r for r in ledger_rows(tmp_path / "data")}
    # Every answer is in the ledger, refusals too (503, cost 0).
    for tenant in ("closed", "open"):
        for request_id, _ in served[tenant]:
            assert rows[request_id].status == 200
    assert {r.status for r in rows.values() if r.tenant == "closed"} == {200, 503}
    # The counters hold exactly what the ledger holds, minus the unmetered (warned) answers.
    for tenant in ("closed", "open"):
        metered = sum(
            rows[rid].cost_micros for rid, headers in served[tenant] if WARNING not in headers
        )
        unmetered = sum(
            rows[rid].cost_micros for rid, headers in served[tenant] if WARNING in headers
        )
        ledger_total = sum(r.cost_micros for r in rows.values() if r.tenant == tenant)
        assert ledger_total == metered + unmetered
        assert _settled(private_redis.url, tenant) == metered
    assert sum(rows[rid].cost_micros for rid, h in served["open"] if WARNING in h) > 0
