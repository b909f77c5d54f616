"""``gateway serve --workers N``: several processes on one port, one ledger, keys made once."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from tests.support.budget_config import budget_config
from tests.support.gateway_server import ACME_KEY, gateway_env
from tests.support.mock_upstream import MockUpstream
from tests.support.served import GATEWAY, REPO, Served, serving

KEY_PATTERN = re.compile(r"sk-sb-[A-Za-z0-9_-]{20,}")
TENANTS = (
    "  acme:\n    keys: [{ env: ACME_KEY }]\n"
    "  walkin:\n    keys: [{ env: WALKIN_KEY, generate_if_unset: true }]\n"
)


def ask(served: Served, key: str, i: int) -> str:
    """One chat completion on a new connection (a new client); the answer's request id."""
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"where is parcel {i}?"}]
        )
    assert raw.parse().choices[0].message.content
    return raw.headers["x-switchboard-request-id"]


def test_two_workers_both_answer_both_write_the_ledger_and_the_key_is_made_once(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        **gateway_env(upstream.base_url),
    }
    env.pop("WALKIN_KEY", None)
    config = tmp_path / "gateway.yaml"
    config.write_text(budget_config(TENANTS), "utf-8")
    ids: list[str] = []
    with serving(
        tmp_path / "data",
        tmp_path / "serve.log",
        env,
        config,
        args=["--workers", "2"],
        healthy_within_s=60,
    ) as served:
        log = served.stderr()
        assert "2 workers" in log
        generated = KEY_PATTERN.findall(log)
        assert len(generated) == 1, f"the parent generates the key once, not per worker: {log}"
        # Concurrent requests on fresh connections reach both workers once both are up; the
        # request id's first 16 hex digits name the process that answered.
        with ThreadPoolExecutor(max_workers=8) as pool:
            for batch in range(25):
                ids += pool.map(lambda i: ask(served, ACME_KEY, i), range(batch * 8, batch * 8 + 8))
                if len({rid[:16] for rid in ids}) == 2:
                    break
        workers = {rid[:16] for rid in ids}
        assert len(workers) == 2, f"every answer came from one process: {workers}"
        # The generated key works whichever worker answers (both read the parent's digest).
        walkin = [ask(served, generated[0], 1000 + i) for i in range(8)]
        assert {rid[:16] for rid in walkin} <= workers
    assert served.process.returncode in (0, -15)
    with sqlite3.connect(tmp_path / "data" / "ledger.sqlite3") as db:
        rows = db.execute("SELECT request_id, tenant FROM requests").fetchall()
    acme = {rid for rid, tenant in rows if tenant == "acme"}
    assert acme == set(ids), "every answered request has its ledger record"
    assert {rid[:16] for rid in acme} == workers, "each worker wrote its own records"
    assert {rid for rid, tenant in rows if tenant == "walkin"} == set(walkin)


def run_serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GATEWAY), "serve", "--data-dir", str(tmp_path / "data"), *args],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_zero_workers_exits_2_naming_the_flag(tmp_path: Path) -> None:
    done = run_serve(tmp_path, "--workers", "0")
    assert done.returncode == 2
    assert "--workers must be 1 or more, got 0" in done.stderr


def test_a_bad_config_exits_2_in_the_parent_before_any_worker_starts(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"  # MOCK_BASE_URL is not set
    config.write_text(budget_config("  acme:\n    keys: [{ env: ACME_KEY }]\n"), "utf-8")
    done = run_serve(tmp_path, "--config", str(config), "--workers", "2", "--port", "1")
    assert done.returncode == 2
    assert "$.upstreams.mock.base_url: environment variable MOCK_BASE_URL is not set" in done.stderr
    assert "workers)" not in done.stderr, "nothing was started"
