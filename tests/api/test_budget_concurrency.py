"""The proof that budgets cannot be raced: 200 concurrent requests against a daily limit that
covers about 50, through the real gateway on a real port, with the official OpenAI client.

For each backend (embedded SQLite, Redis, and two ``gateway serve`` processes sharing one Redis):
settled spend stays within the limit plus one reservation, at least 60% of the budget is used
(a limit that starves is wrong too), every refusal is a 429 ``insufficient_quota`` with
``retry-after`` and ``x-should-retry: false``, and the ledger's costs sum to the store's settled
total for the day.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai

from gateway.budget import (
    BudgetStore,
    RedisBudgetStore,
    SqliteBudgetStore,
    day_period,
    period_key,
)
from gateway.ledger import LedgerQuery, SqliteLedger
from gateway.tokens import TokenCounter
from tests.conftest import all_records
from tests.support.budget_config import (
    HELLO,
    HELLO_COST_MICROS,
    REDIS_URL,
    budget_config,
    redis_prefix,
    redis_state,
)
from tests.support.gateway_server import GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream
from tests.support.served import serving

SHOP_KEY = "sk-test-shop-0123456789"
REQUESTS = 200
# About 50 requests' worth: 50 × 460 µUSD.
LIMIT_MICROS = 50 * HELLO_COST_MICROS
TENANTS = f"""  shop:
    keys: [{{ env: SHOP_KEY }}]
    budget: {{ daily_limit: {LIMIT_MICROS / 1_000_000}, hard_action: reject }}
"""
MESSAGES = [{"role": "user", "content": HELLO}]
# Every request must reach the model: 200 identical prompts would otherwise become cache hits
# as soon as one answer is stored (a hit releases its reservation), and how many do depends on
# timing, not on the budget.
NO_CACHE = "cache:\n  enabled: false\n"


def one_reservation() -> int:
    """What one request reserves: tiktoken's prompt count at the input price + 4 output tokens."""
    prompt = TokenCounter().count_messages(MESSAGES, "auto")
    return prompt * 10 + 4 * 100


@dataclass
class Outcome:
    status: int
    code: str | None = None
    retry_after: str | None = None
    should_retry: str | None = None


async def burst(base_urls: Sequence[str], n: int = REQUESTS) -> list[Outcome]:
    """``n`` chat requests at once, spread over ``base_urls`` in turn."""
    clients = [
        openai.AsyncOpenAI(
            base_url=url,
            api_key=SHOP_KEY,
            max_retries=0,
            timeout=30,
            http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=n)),
        )
        for url in base_urls
    ]

    async def one(i: int) -> Outcome:
        client = clients[i % len(clients)]
        try:
            await client.chat.completions.create(model="auto", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            headers = exc.response.headers
            return Outcome(
                exc.status_code,
                exc.code,
                headers.get("retry-after"),
                headers.get("x-should-retry"),
            )
        return Outcome(200)

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for client in clients:
            await client.close()


def day_key() -> str:
    return period_key("shop", day_period("UTC", datetime.now(UTC)))


async def settled_of(store: BudgetStore) -> int:
    try:
        return await store.settled(day_key())
    finally:
        await store.aclose()


def check(outcomes: list[Outcome], settled: int, ledger_cost: int, label: str) -> None:
    statuses = Counter(o.status for o in outcomes)
    refused = [o for o in outcomes if o.status != 200]
    overshoot = settled - LIMIT_MICROS
    sys.stdout.write(
        f"\n[{label}] limit {LIMIT_MICROS} µUSD, settled {settled} µUSD, overshoot {overshoot} "
        f"µUSD (one reservation: {one_reservation()}), used {settled / LIMIT_MICROS:.1%}, "
        f"statuses {dict(statuses)}\n"
    )
    assert set(statuses) <= {200, 429}, statuses
    for o in refused:
        assert (o.status, o.code, o.should_retry) == (429, "insufficient_quota", "false")
        assert o.retry_after is not None and int(o.retry_after) >= 1
    assert settled <= LIMIT_MICROS + one_reservation()
    assert settled >= 0.6 * LIMIT_MICROS
    # Every answered request cost the same, and nothing refused cost anything.
    assert settled == statuses[200] * HELLO_COST_MICROS
    assert ledger_cost == settled


def test_embedded_200_concurrent_requests_never_overrun_the_daily_budget(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    env = gateway_env(upstream.base_url, SHOP_KEY=SHOP_KEY)
    with GatewayServer(tmp_path, env, budget_config(TENANTS, extra=NO_CACHE)) as gw:
        outcomes = asyncio.run(burst([gw.base_url]))
        records = all_records(gw)
    settled = asyncio.run(settled_of(SqliteBudgetStore(tmp_path / "budget.sqlite3")))
    ledger_cost = sum(r.cost_micros for r in records if r.tenant == "shop")
    check(outcomes, settled, ledger_cost, "embedded")


def test_redis_200_concurrent_requests_never_overrun_the_daily_budget(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    env = gateway_env(upstream.base_url, SHOP_KEY=SHOP_KEY)
    with redis_prefix() as prefix:
        config = budget_config(TENANTS, extra=NO_CACHE + redis_state(prefix))
        with GatewayServer(tmp_path, env, config) as gw:
            outcomes = asyncio.run(burst([gw.base_url]))
            records = all_records(gw)
        settled = asyncio.run(settled_of(RedisBudgetStore(REDIS_URL, prefix)))
    ledger_cost = sum(r.cost_micros for r in records if r.tenant == "shop")
    check(outcomes, settled, ledger_cost, "redis")


def test_two_gateway_processes_sharing_redis_never_overrun_the_daily_budget(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        **gateway_env(upstream.base_url, SHOP_KEY=SHOP_KEY),
    }
    with redis_prefix() as prefix:
        path = tmp_path / "budget.yaml"
        path.write_text(budget_config(TENANTS, extra=NO_CACHE + redis_state(prefix)), "utf-8")
        dirs = [tmp_path / "a", tmp_path / "b"]
        with (
            serving(dirs[0], tmp_path / "a.log", env, config=path) as first,
            serving(dirs[1], tmp_path / "b.log", env, config=path) as second,
        ):
            outcomes = asyncio.run(burst([first.url + "/v1", second.url + "/v1"]))
        settled = asyncio.run(settled_of(RedisBudgetStore(REDIS_URL, prefix)))
    # Each process keeps its own ledger in its data directory; together they are the record.
    handled: list[int] = []
    ledger_cost = 0
    for data_dir in dirs:
        with SqliteLedger(data_dir / "ledger.sqlite3") as ledger:
            records = list(ledger.records(LedgerQuery(tenant="shop")))
        handled.append(len(records))
        ledger_cost += sum(r.cost_micros for r in records)
    # Each process took half the burst (which of them won the budget is a race, and may be one).
    assert handled == [REQUESTS // 2, REQUESTS // 2]
    check(outcomes, settled, ledger_cost, "two processes, redis")
