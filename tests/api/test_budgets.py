"""Budget rules and rate limits end to end: the real gateway on a real port, the mock upstream.

Each tenant of the module's gateway has the rule one test is about (costs: tests/support's
budget_config). The store is read back with a second store object on the same SQLite file, as
another worker process would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateway.budget import SqliteBudgetStore, day_period, month_period, period_key
from tests.conftest import all_records, ledger_record
from tests.support.budget_config import (
    HELLO,
    HELLO_COST_MICROS,
    budget_config,
    redis_state,
)
from tests.support.gateway_server import GatewayServer, gateway_env
from tests.support.mock_upstream import CutStream, MockUpstream, Reply, free_port

KEYS = {
    name: f"sk-test-{name}-0123456789"
    for name in (
        "soft",
        "softcache",
        "hardcache",
        "peruser",
        "permodel",
        "ceiling",
        "capped",
        "rated",
        "tiny",
        "cny",
        "plain",
        "closed",
        "open",
        "embedder",
        "narrow",
        "ratedopen",
        "ratedclosed",
    )
}

TENANTS = """
  soft:
    keys: [{ env: KEY_SOFT }]
    cache: false
    budget: { daily_limit: 1, soft_limit: 0.01, soft_action: downgrade }
  softcache:
    keys: [{ env: KEY_SOFTCACHE }]
    budget: { daily_limit: 1, soft_limit: 0.01, soft_action: cache_only }
  hardcache:
    keys: [{ env: KEY_HARDCACHE }]
    budget: { daily_limit: 0.002, hard_action: cache_only }
  peruser:
    keys: [{ env: KEY_PERUSER }]
    cache: false
    budget: { user_limits: { daily: 0.001 } }
  permodel:
    keys: [{ env: KEY_PERMODEL }]
    cache: false
    budget: { model_limits: { gpt-4o: { daily: 0.01 } } }
  ceiling:
    keys: [{ env: KEY_CEILING }]
    cache: false
    budget: { request_limit: 0.001 }
  capped:
    keys: [{ env: KEY_CAPPED }]
    cache: false
    budget: { monthly_limit: 100, default_max_output_tokens: 32 }
  rated:
    keys: [{ env: KEY_RATED }]
    cache: false
    rate_limits:
      per_key: { requests_per_minute: 2 }
      per_tenant: { tokens_per_minute: 100000 }
  tiny:
    keys: [{ env: KEY_TINY }]
    cache: false
    rate_limits: { per_tenant: { tokens_per_minute: 50 } }
  cny:
    keys: [{ env: KEY_CNY }]
    cache: false
    timezone: Asia/Shanghai
    budget: { currency: CNY, usd_rate: 7.1, daily_limit: 0.0071 }
  plain:
    keys: [{ env: KEY_PLAIN }]
    cache: false
  embedder:
    keys: [{ env: KEY_EMBEDDER }]
    budget: { daily_limit: 0.001 }
"""

CACHE = "cache:\n  enabled: true\n  admit_after: 1\n"


def key_env() -> dict[str, str]:
    return {f"KEY_{name.upper()}": key for name, key in KEYS.items()}


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    data_dir = tmp_path_factory.mktemp("budget-data")
    env = gateway_env(mock_upstream.base_url, **key_env())
    with GatewayServer(data_dir, env, budget_config(TENANTS, extra=CACHE)) as server:
        yield server


def ask(
    gw: GatewayServer, tenant: str, text: str, *, model: str = "auto", **extra: object
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(
        gw.base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEYS[tenant]}"},
        timeout=10,
    )


def store_totals(gw: GatewayServer, key: str) -> tuple[int, int]:
    """(spent, settled) of one counter, read through a second store on the gateway's file."""

    async def read() -> tuple[int, int]:
        store = SqliteBudgetStore(gw.settings.data_dir / "budget.sqlite3")
        try:
            return await store.spent(key), await store.settled(key)
        finally:
            await store.aclose()

    return asyncio.run(read())


def today(tenant: str, zone: str = "UTC") -> str:
    return period_key(tenant, day_period(zone, datetime.now(UTC)))


def ledger_cost(gw: GatewayServer, tenant: str) -> int:
    return sum(r.cost_micros for r in all_records(gw) if r.tenant == tenant)


def test_past_the_soft_limit_large_requests_are_downgraded_with_a_warning(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Reply("a long answer", completion_tokens=20))  # 20,000 µUSD on large
    first = ask(gateway, "soft", "refund for my broken kettle")
    second = ask(gateway, "soft", "refund for my broken toaster")

    assert first.status_code == second.status_code == 200
    assert first.headers["x-switchboard-route"] == "large"
    assert second.headers["x-switchboard-route"] == "small"
    reason = second.headers["x-switchboard-reason"]
    assert "budget: soft limit" in reason and "downgraded large -> small" in reason
    warning = second.headers["x-switchboard-budget-warning"]
    assert "of the daily limit used" in warning and "action: downgrade" in warning
    assert [r.json["model"] for r in upstream.history] == ["gpt-4o", "mock-small"]
    explained = httpx.post(
        gateway.base_url + "/route/explain",
        json={"model": "auto", "messages": [{"role": "user", "content": "refund for my kettle"}]},
        headers={"authorization": f"Bearer {KEYS['soft']}"},
    ).json()
    assert explained["route"] == "small"
    assert "action: downgrade" in explained["budget_warning"]


def test_past_a_cache_only_soft_limit_hits_are_served_and_misses_refused(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    stored = ask(gateway, "softcache", "what are your opening hours")
    upstream.enqueue(Reply("a long answer", completion_tokens=200))  # 20,000 µUSD on small
    ask(gateway, "softcache", "do you ship abroad")

    hit = ask(gateway, "softcache", "what are your opening hours")
    miss = ask(gateway, "softcache", "can I pay by invoice")

    assert stored.headers["x-switchboard-cache"] == "miss"
    assert (hit.status_code, hit.headers["x-switchboard-route"]) == (200, "cache")
    assert hit.headers["x-switchboard-cost-usd"] == "0.000000"
    assert "action: cache_only" in hit.headers["x-switchboard-budget-warning"]
    assert miss.status_code == 429
    assert miss.json()["error"]["code"] == "insufficient_quota"
    assert miss.headers["x-should-retry"] == "false"
    assert int(miss.headers["retry-after"]) >= 1
    assert len(upstream.history) == 2  # neither the hit nor the refused miss reached a tier
    spent, settled = store_totals(gateway, today("softcache"))
    assert spent == settled == ledger_cost(gateway, "softcache")


def test_at_a_cache_only_hard_limit_hits_cost_nothing_and_misses_get_429(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # 2,000 µUSD a day; each of these costs 680 and reserves about 700 (max_tokens 6).
    text = "what is your return policy"
    first = ask(gateway, "hardcache", text, max_tokens=6)
    hit_within_budget = ask(gateway, "hardcache", text, max_tokens=6)
    spent_after_hit, _ = store_totals(gateway, today("hardcache"))
    other = ask(gateway, "hardcache", "what is your exchange policy", max_tokens=6)
    refused = ask(gateway, "hardcache", "what is your warranty policy", max_tokens=6)
    hit_past_limit = ask(gateway, "hardcache", text, max_tokens=6)

    assert first.status_code == other.status_code == 200
    # A hit reserves nothing: the counters hold the first answer's cost only.
    assert hit_within_budget.headers["x-switchboard-route"] == "cache"
    assert spent_after_hit == 680
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and "daily limit of 0.002 USD" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert (hit_past_limit.status_code, hit_past_limit.headers["x-switchboard-route"]) == (
        200,
        "cache",
    )
    # A hit is answered before the budget is consulted: nothing reserved, so no warning either.
    assert "x-switchboard-budget-warning" not in hit_past_limit.headers
    assert "hard limit" in refused.headers["x-switchboard-budget-warning"]
    hit = ledger_record(gateway, hit_past_limit.headers["x-switchboard-request-id"])
    assert (hit.cost_micros, hit.cache_hit) == (0, True)
    spent, settled = store_totals(gateway, today("hardcache"))
    assert spent == settled == 2 * 680 == ledger_cost(gateway, "hardcache")
    assert len(upstream.history) == 2


def test_each_end_user_has_a_daily_limit_of_their_own(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # 1,000 µUSD per user a day: two requests of 460 fit, a third does not.
    alice = [ask(gateway, "peruser", HELLO, max_tokens=4, user="alice") for _ in range(3)]
    bob = ask(gateway, "peruser", HELLO, max_tokens=4, user="bob")

    assert [r.status_code for r in alice] == [200, 200, 429]
    message = alice[2].json()["error"]["message"]
    assert "daily limit per end user" in message and "budget.user_limits.daily" in message
    assert bob.status_code == 200
    user_key = period_key("peruser", day_period("UTC", datetime.now(UTC)), user="alice")
    assert store_totals(gateway, user_key) == (2 * HELLO_COST_MICROS, 2 * HELLO_COST_MICROS)


def test_a_model_limit_stops_that_model_only(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # gpt-4o: 10,000 µUSD a day; each request costs 4,300 and reserves about 4,500.
    large = [ask(gateway, "permodel", HELLO, model="gpt-4o", max_tokens=4) for _ in range(3)]
    small = ask(gateway, "permodel", HELLO, max_tokens=4)

    assert [r.status_code for r in large] == [200, 200, 429]
    assert "daily limit for model gpt-4o" in large[2].json()["error"]["message"]
    assert small.status_code == 200 and small.headers["x-switchboard-route"] == "small"


def test_a_request_above_the_per_request_ceiling_is_a_400_naming_the_fix(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # No max_tokens: the tier's cap of 64 output tokens would cost 6,400 µUSD > 1,000.
    refused = ask(gateway, "ceiling", HELLO)
    error = refused.json()["error"]
    fits = int(error["message"].split("lower max_tokens to ")[1].split()[0])
    allowed = ask(gateway, "ceiling", HELLO, max_tokens=fits)
    too_many = ask(gateway, "ceiling", HELLO, max_tokens=fits + 1)

    assert refused.status_code == 400
    assert error["param"] == "max_tokens" and "budget.request_limit" in error["message"]
    assert "per-request limit of 0.001 USD" in error["message"]
    assert allowed.status_code == 200
    assert too_many.status_code == 400
    assert len(upstream.history) == 1


def test_the_budget_output_cap_is_sent_upstream_when_the_request_sets_none(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    answered = ask(gateway, "capped", "how much is shipping", max_completion_tokens=None)

    assert answered.status_code == 200
    sent = upstream.history[-1].json
    assert sent["max_tokens"] == 32 and "max_completion_tokens" not in sent


def test_streams_settle_what_they_generated_even_when_cut_off(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    month = period_key("capped", month_period("UTC", datetime.now(UTC)))
    before, _ = store_totals(gateway, month)
    body = {"stream": True, "stream_options": {"include_usage": True}}
    whole = ask(gateway, "capped", "tell me about your loyalty programme", **body)
    upstream.enqueue(CutStream(after_chunks=2))
    cut = ask(gateway, "capped", "tell me about your gift cards please", **body)

    assert whole.status_code == cut.status_code == 200
    assert '"error"' in cut.text  # the upstream failure, as the stream's last event
    costs = [
        ledger_record(gateway, r.headers["x-switchboard-request-id"]).cost_micros
        for r in (whole, cut)
    ]
    assert all(c > 0 for c in costs)  # the cut stream is billed for its two chunks
    spent, settled = store_totals(gateway, month)
    # Settled to the ledger's cost, and nothing left reserved.
    assert spent == settled == before + sum(costs)
    assert settled == ledger_cost(gateway, "capped")


def test_rate_limits_answer_429_with_openai_headers(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)  # keep the three requests in one minute window
    answers = [ask(gateway, "rated", f"question {i}", max_tokens=4) for i in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "2"
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
        assert answer.headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(answer.headers["x-ratelimit-remaining-tokens"]) < 100000
    refused = answers[2]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(upstream.history) == 2


def test_a_request_larger_than_the_token_rate_limit_is_told_not_to_retry(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    refused = ask(gateway, "tiny", HELLO, max_tokens=100)

    assert refused.status_code == 429
    assert refused.headers["x-should-retry"] == "false"
    assert "lower max_tokens" in refused.json()["error"]["message"]


def test_budgets_in_cny_follow_the_tenants_time_zone(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # 0.0071 CNY at 7.1 per USD = 1,000 µUSD a day (Shanghai's day): two requests fit.
    answers = [ask(gateway, "cny", HELLO, max_tokens=4) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    message = answers[2].json()["error"]["message"]
    assert "daily limit of 0.0071 CNY" in message
    assert "+08:00 (Asia/Shanghai)" in message
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    expected = (midnight - now).total_seconds()
    assert abs(int(answers[2].headers["retry-after"]) - expected) <= 5
    key = today("cny", "Asia/Shanghai")
    assert store_totals(gateway, key) == (2 * HELLO_COST_MICROS, 2 * HELLO_COST_MICROS)

    # Finance in Shanghai reads the day in yuan beside the dollars of record.
    auth = {"authorization": f"Bearer {KEYS['cny']}"}
    url = gateway.root_url + "/admin/reports/spend"
    doc = httpx.get(url, params={"tenant": "cny"}, headers=auth, timeout=10).json()
    assert doc["local_currency"] == {"code": "CNY", "usd_rate": "7.1"}
    assert doc["time_zone"] == "Asia/Shanghai"
    cost = 2 * HELLO_COST_MICROS  # 920 µUSD = 0.006532 CNY
    assert doc["total"]["cost_micros"] == cost
    assert doc["total"]["cost_local"] == "0.0065"
    assert doc["budget"]["day"]["limit_local"] == "0.0071"
    assert doc["budget"]["day"]["used_local"] == "0.0065"
    csv_text = httpx.get(
        url, params={"tenant": "cny", "format": "csv"}, headers=auth, timeout=10
    ).text
    header = csv_text.splitlines()[0].split(",")
    assert header[-3:] == ["cost_cny", "large_cost_cny", "savings_cny"]


def test_embeddings_are_reserved_and_settled_against_the_budget(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # 100 µUSD per input token, 1,000 µUSD a day: "hello there friend" costs 300.
    answers = [
        httpx.post(
            gateway.base_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": HELLO},
            headers={"authorization": f"Bearer {KEYS['embedder']}"},
            timeout=10,
        )
        for _ in range(5)
    ]

    statuses = [a.status_code for a in answers]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    spent, settled = store_totals(gateway, today("embedder"))
    assert spent == settled == 900 == ledger_cost(gateway, "embedder")


def test_a_tenant_without_limits_gets_no_limit_headers(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    answer = ask(gateway, "plain", HELLO)

    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.startswith(("x-ratelimit", "x-switchboard-budget"))]


def test_near_the_limit_a_request_is_served_without_a_dearer_fallback(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    # 5,000 µUSD a day. A small request costs 460 but reserves what its large fallback could
    # cost (4,500): two fit; the third fits only without the fallback, and is served so.
    tenants = (
        "  narrow:\n    keys: [{ env: KEY_NARROW }]\n    cache: false\n"
        "    budget: { daily_limit: 0.005 }\n"
    )
    env = gateway_env(upstream.base_url, KEY_NARROW=KEYS["narrow"])
    config = budget_config(tenants).replace("  fallbacks: {}\n", "")  # small <-> large
    with GatewayServer(tmp_path, env, config) as gw:
        answers = [ask(gw, "narrow", HELLO, max_tokens=4) for _ in range(3)]
        third = ledger_record(gw, answers[2].headers["x-switchboard-request-id"])

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert "no fallback to large" not in answers[1].headers["x-switchboard-reason"]
    assert "budget: no fallback to large" in answers[2].headers["x-switchboard-reason"]
    assert any("no fallback to large" in r for r in third.reasons)


UNREACHABLE_TENANTS = """
  closed:
    keys: [{ env: KEY_CLOSED }]
    budget: { daily_limit: 1 }
  open:
    keys: [{ env: KEY_OPEN }]
    budget: { daily_limit: 1, on_backend_error: fail_open }
  ratedopen:
    keys: [{ env: KEY_RATEDOPEN }]
    rate_limits: { per_tenant: { requests_per_minute: 10 } }
  ratedclosed:
    keys: [{ env: KEY_RATEDCLOSED }]
    rate_limits: { per_tenant: { requests_per_minute: 10 }, on_backend_error: fail_closed }
"""


def test_with_redis_unreachable_limits_fail_closed_or_open_as_configured(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    env = gateway_env(upstream.base_url, **key_env())
    state = redis_state("switchboard-unreachable:", url=f"redis://127.0.0.1:{free_port()}/0")
    config = budget_config(UNREACHABLE_TENANTS, extra=state + "cache:\n  enabled: false\n")
    with GatewayServer(tmp_path, env, config) as gw:
        closed = ask(gw, "closed", HELLO, max_tokens=4)
        opened = ask(gw, "open", HELLO, max_tokens=4)
        rate_open = ask(gw, "ratedopen", HELLO, max_tokens=4)
        rate_closed = ask(gw, "ratedclosed", HELLO, max_tokens=4)

    assert closed.status_code == 503
    error = closed.json()["error"]
    assert error["code"] == "budget_store_unavailable"
    assert "budget store (Redis)" in error["message"]
    assert int(closed.headers["retry-after"]) >= 1
    assert opened.status_code == 200
    assert "unavailable" in opened.headers["x-switchboard-budget-warning"]
    # Rate limits fail open by default, and closed when configured so.
    assert rate_open.status_code == 200
    assert "rate limits not enforced" in rate_open.headers["x-switchboard-budget-warning"]
    assert rate_closed.status_code == 503
    assert rate_closed.json()["error"]["code"] == "budget_store_unavailable"
    assert len(upstream.history) == 2


def test_the_spend_report_shows_budget_used_and_left_from_the_store(gateway: GatewayServer) -> None:
    assert ask(gateway, "capped", HELLO, max_tokens=4).status_code == 200
    response = httpx.get(
        gateway.root_url + "/admin/reports/spend",
        params={"tenant": "capped"},
        headers={"authorization": f"Bearer {KEYS['capped']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    budget = response.json()["budget"]
    spent = sum(r.cost_micros for r in all_records(gateway) if r.tenant == "capped")
    assert spent > 0
    assert budget["month"]["limit_micros"] == 100_000_000
    assert budget["month"]["used_micros"] == spent
    assert budget["month"]["left_micros"] == 100_000_000 - spent
    assert budget["day"]["limit_micros"] is None, "no daily limit: counted, not limited"
    assert budget["day"]["used_micros"] == spent
    page = httpx.get(
        gateway.root_url + "/admin/reports",
        params={"tenant": "capped"},
        headers={"authorization": f"Bearer {KEYS['capped']}"},
        timeout=10,
    )
    assert page.status_code == 200
    assert "$100.00" in page.text, "the burn-down names the monthly limit"
