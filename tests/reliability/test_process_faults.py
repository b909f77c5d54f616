"""The gateway process stopped under load: SIGTERM drains, ``kill -9`` loses no answered request.

SIGTERM: uvicorn stops accepting, lets in-flight requests (streams included) finish, then the
app's shutdown flushes the ledger; every stream ends with its whole text and ``[DONE]``, every
one is in the ledger. ``kill -9``: no shutdown code runs, yet every request the client saw
answered is in the ledger exactly once (the answer's last byte waits for the commit), and after
a restart the budget counter (SQLite, or Redis) equals the ledger's sum (records committed
before a settle that never came are settled from the ledger at start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.budget import RedisBudgetStore
from tests.reliability.gateway_process import (
    CLOSED_KEY,
    PLAIN_KEY,
    GatewayProcess,
    gateway_env,
    running,
    wait_until,
    write_config,
)
from tests.reliability.ledger_reads import day_scope, ledger_rows, sqlite_settled
from tests.support.budget_config import REDIS_URL, redis_prefix
from tests.support.mock_upstream import MockUpstream, StallStream


def _stream(client: openai.OpenAI, text: str, first: threading.Event | None = None) -> str:
    """Stream one answer to its end; returns the request id, once ``[DONE]`` came."""
    messages: Any = [{"role": "user", "content": text}]
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=messages, stream=True
    ) as response:
        parts: list[str] = []
        for chunk in response.parse():
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                if first is not None:
                    first.set()
        assert "".join(parts) == f"echo: {text}"
        return response.headers["x-switchboard-request-id"]


def _refuses_connections(gw: GatewayProcess) -> bool:
    try:
        httpx.get(f"{gw.url}/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_sigterm_lets_streams_in_flight_finish_and_records_every_one(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "gateway.yaml")
    with running(config, tmp_path / "data", gateway_env(upstream.base_url)) as gw:
        client = openai.OpenAI(base_url=gw.v1, api_key=PLAIN_KEY, max_retries=0, timeout=60)
        # Each stream sends a chunk, then goes quiet for a while: SIGTERM arrives mid-stream.
        upstream.enqueue(*(StallStream(after_chunks=1, seconds=2.0) for _ in range(3)))
        started = [threading.Event() for _ in range(3)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            streams = [
                pool.submit(_stream, client, f"stream {i} across a shutdown", started[i])
                for i in range(3)
            ]
            for event in started:
                assert event.wait(30), "every stream to deliver its first chunk"
            gw.process.send_signal(signal.SIGTERM)
            wait_until(lambda: _refuses_connections(gw), "the listening socket to close")
            ids = [s.result(timeout=60) for s in streams]
        assert gw.process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Traceback" not in gw.stderr(), gw.stderr()
    rows = {r.request_id: r for r in ledger_rows(tmp_path / "data")}
    assert set(rows) == set(ids)
    assert all(rows[i].status == 200 and rows[i].stream and rows[i].cost_micros > 0 for i in ids)


def _settled(state: str, data: Path, prefix: str) -> int:
    if state == "embedded":
        return sqlite_settled(data, day_scope("closed"))[0]

    async def read() -> int:
        store = RedisBudgetStore(REDIS_URL, prefix)
        try:
            return await store.settled(day_scope("closed"))
        finally:
            await store.aclose()

    return asyncio.run(read())


@pytest.mark.parametrize("state", ["embedded", "redis"])
def test_kill_9_under_load_loses_no_answered_request_and_counters_match_after_restart(
    upstream: MockUpstream, tmp_path: Path, state: str
) -> None:
    with redis_prefix() as prefix:
        _kill_9_under_load(upstream, tmp_path, state, prefix)


def _kill_9_under_load(upstream: MockUpstream, tmp_path: Path, state: str, prefix: str) -> None:
    config = write_config(tmp_path / "gateway.yaml")
    data = tmp_path / "data"
    env = gateway_env(upstream.base_url, STATE=state, REDIS_URL=REDIS_URL, KEY_PREFIX=prefix)
    answered: list[str] = []
    failed: list[BaseException] = []
    lock = threading.Lock()
    numbers = itertools.count()

    def client_loop(gw: GatewayProcess) -> None:
        # The tenant with a budget (SQLite or Redis counters), so the counters can be compared.
        client = openai.OpenAI(base_url=gw.v1, api_key=CLOSED_KEY, max_retries=0, timeout=30)
        while True:
            n = next(numbers)
            text = f"request {n} under load"
            try:
                if n % 2:
                    request_id = _stream(client, text)
                else:
                    raw = client.chat.completions.with_raw_response.create(
                        model="auto", messages=[{"role": "user", "content": text}]
                    )
                    assert raw.parse().choices[0].message.content == f"echo: {text}"
                    request_id = raw.headers["x-switchboard-request-id"]
            except (openai.APIConnectionError, httpx.TransportError) as exc:
                with lock:
                    failed.append(exc)
                return  # the gateway is gone
            with lock:
                answered.append(request_id)

    with running(config, data, env) as gw:
        threads = [threading.Thread(target=client_loop, args=(gw,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(answered) >= 60, "60 answered requests", on_timeout=gw.stderr)
        gw.kill()
        for thread in threads:
            thread.join(60)
    assert len(failed) == 4  # each client saw the gateway vanish

    rows = ledger_rows(data)
    ids = [r.request_id for r in rows]
    assert len(ids) == len(set(ids)), "a request recorded twice"
    assert set(answered) <= set(ids), "an answered request is missing from the ledger"
    # At most the requests in flight at the kill were recorded without reaching their client.
    assert len(ids) - len(answered) <= 4

    # Restart on the same data directory: reservations the ledger holds are settled from it.
    with running(config, data, env) as gw:
        client = openai.OpenAI(base_url=gw.v1, api_key=CLOSED_KEY, max_retries=0, timeout=30)
        after = _stream(client, "after the restart")
        assert gw.terminate() in (0, -signal.SIGTERM)
    rows = ledger_rows(data)
    assert after in {r.request_id for r in rows}
    settled = _settled(state, data, prefix)
    assert settled == sum(r.cost_micros for r in rows if r.tenant == "closed") > 0
