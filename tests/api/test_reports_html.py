"""The HTML report in a real browser: GET /admin/reports rendered by headless Chromium.

Set SWITCHBOARD_REPORT_SCREENSHOT=docs/img/report.png to refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.ledger import LedgerRecord, SqliteLedger
from tests.api.test_reports_spend import REPORT_CONFIG
from tests.support.chromium import png_size, require_chromium, screenshot
from tests.support.gateway_server import ADMIN_KEY, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream

USERS = ["alice@shop.example", "bob", "carol", "<b>mallory</b>", "dave", None]


def history(now: datetime) -> Iterator[LedgerRecord]:
    """Six weeks of plausible traffic for acme: mostly small, some large, a growing cache."""
    rng = random.Random(7)
    for i in range(2_500):
        ts = now - timedelta(seconds=rng.randrange(42 * 86_400))
        route = rng.choices(["small", "large", "cache"], weights=[60, 25, 15])[0]
        prompt, completion = rng.randint(200, 3_000), rng.randint(20, 600)
        large = (prompt * 2_500 + completion * 10_000) // 1_000
        yield LedgerRecord(
            request_id=f"h{i}",
            ts=ts,
            tenant="acme",
            requested_model="auto",
            route=route,
            model={"small": "mock-small", "large": "gpt-4o", "cache": "mock-small"}[route],
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_micros={"small": large // 25, "large": large, "cache": 0}[route],
            large_cost_micros=large,
            latency_ms=10.0,
            status=200,
            stream=False,
            cache_hit=route == "cache",
            end_user=rng.choice(USERS),
        )


@pytest.fixture(scope="module")
def server(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    data_dir = tmp_path_factory.mktemp("html-report-data")
    with SqliteLedger(data_dir / "ledger.sqlite3") as ledger:
        for rec in history(datetime.now(UTC)):
            ledger.record(rec)
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url), REPORT_CONFIG) as gw:
        yield gw


def test_the_html_report_renders_in_headless_chromium(
    server: GatewayServer, tmp_path: Path
) -> None:
    require_chromium()
    response = httpx.get(
        server.root_url + "/admin/reports",
        params={"tenant": "acme"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    page = tmp_path / "report.html"
    page.write_text(response.text, encoding="utf-8")
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")

    shot = screenshot(page, tmp_path / "report.png")
    empty = screenshot(blank, tmp_path / "blank.png")

    assert png_size(shot) == (1200, 1600)
    # Charts, labels and colour make a far bigger PNG than a white page of the same size.
    assert shot.stat().st_size > 8 * empty.stat().st_size, (shot.stat(), empty.stat())
    assert "&lt;b&gt;mallory&lt;/b&gt;" in response.text and "<b>mallory" not in response.text
    target = os.environ.get("SWITCHBOARD_REPORT_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)
