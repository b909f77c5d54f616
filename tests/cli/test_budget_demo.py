"""config/examples/budget-demo.yaml served by a real ``gateway serve``, as docs/budgets.md says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.budget_config import REDIS_URL, budget_config
from tests.support.gateway_server import UPSTREAM_KEY, gateway_env
from tests.support.mock_upstream import MockUpstream
from tests.support.served import GATEWAY, REPO, serving

DEMO_KEY = "sk-demo-0123456789"


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_the_budget_demo_serves_within_its_daily_limit_and_rejects_beyond_it(
    upstream: MockUpstream, tmp_path: Path, backend: str
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "UPSTREAM_BASE_URL": upstream.base_url,
        "UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SMALL_MODEL": "mock-small",
        "LARGE_MODEL": "gpt-4o",
        "DEMO_API_KEY": DEMO_KEY,
        # 5,000 µUSD. A request reserves what it could cost on its tier or its fallback (the
        # large tier, 10 USD/M output): 256 output tokens (2,560 µUSD) fit; 10,000 do not even
        # on the small tier (0.60 USD/M: 6,000 µUSD).
        "DEMO_DAILY_LIMIT_USD": "0.005",
        "STATE_BACKEND": backend,
        "REDIS_URL": REDIS_URL,
    }
    config = REPO / "config" / "examples" / "budget-demo.yaml"
    try:
        with serving(tmp_path / "data", tmp_path / "serve.log", env, config=config) as served:
            url = f"{served.url}/v1/chat/completions"
            auth = {"authorization": f"Bearer {DEMO_KEY}"}
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}
            small = httpx.post(url, json=body, headers=auth, timeout=10)
            large = httpx.post(url, json={**body, "max_tokens": 10_000}, headers=auth, timeout=10)
        # Finance's view of the same day: the ledger's spend and the store's budget agree.
        report = subprocess.run(
            [
                str(GATEWAY),
                "report",
                "--tenant",
                "demo",
                "--config",
                str(config),
                "--data-dir",
                str(tmp_path / "data"),
                "--format",
                "json",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter("switchboard-demo:*"))
        if keys:
            client.delete(*keys)
        client.close()

    assert small.status_code == 200, small.text
    assert upstream.history[0].json["max_tokens"] == 256  # the budget's default output cap
    assert large.status_code == 429
    assert large.json()["error"]["code"] == "insufficient_quota"
    assert "lower max_tokens" in large.json()["error"]["message"]
    assert large.headers["x-should-retry"] == "false"
    assert 1 <= int(large.headers["retry-after"]) <= 86400
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    spent = doc["total"]["cost_micros"]
    assert spent > 0
    assert doc["budget"]["day"]["limit_micros"] == 5_000
    assert doc["budget"]["day"]["used_micros"] == spent
    assert doc["budget"]["day"]["left_micros"] == 5_000 - spent


def test_a_budget_added_by_a_config_reload_applies_without_a_restart(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    tenant = "  shop:\n    keys: [{ env: SHOP_KEY }]\n    cache: false\n"
    limited = tenant + "    budget: { daily_limit: 0.001 }\n"  # 1,000 µUSD
    path = tmp_path / "gateway.yaml"
    path.write_text(budget_config(tenant), "utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        **gateway_env(upstream.base_url, SHOP_KEY="sk-test-shop-0123456789"),
    }

    def ask() -> httpx.Response:
        return httpx.post(
            f"{served.url}/v1/chat/completions",
            headers={"authorization": "Bearer sk-test-shop-0123456789"},
            # 64 output tokens at 100 µUSD: 6,400 µUSD, more than the limit once there is one.
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )

    with serving(tmp_path / "data", tmp_path / "serve.log", env, config=path) as served:
        before = ask()
        path.write_text(budget_config(limited), "utf-8")
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (after := ask()).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)

    assert before.status_code == 200
    assert after.status_code == 429, after.text
    assert after.json()["error"]["code"] == "insufficient_quota"
    assert (tmp_path / "data" / "budget.sqlite3").exists()
