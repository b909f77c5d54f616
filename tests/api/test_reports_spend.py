"""GET /admin/reports/spend end to end: a real gateway, a mock upstream, prices from the config.

The module sends known traffic once (the mock reports fixed token counts), then reads it back:
totals to the cent, cache hits at cost 0 with their savings, days in acme's time zone
(Asia/Shanghai), JSON and CSV shapes, who may read what, and every bad input as a 400.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateway.ledger import LedgerQuery, LedgerRecord
from tests.support.gateway_server import (
    ACME_KEY,
    ADMIN_KEY,
    GLOBEX_KEY,
    TEST_CONFIG,
    GatewayServer,
    gateway_env,
)
from tests.support.mock_upstream import MockUpstream, Reply

# Small: 0.1 / 0.2 USD per million tokens (TEST_CONFIG); large: 2.5 / 10, set here.
REPORT_CONFIG = (
    TEST_CONFIG.replace(
        "    model: gpt-4o\nmodels:",
        "    model: gpt-4o\n"
        "    price: { input_usd_per_mtok: 2.5, output_usd_per_mtok: 10 }\n"
        "models:",
    )
    .replace("cache:\n  enabled: false\n", "cache:\n  enabled: true\n  admit_after: 1\n")
    .replace(
        "  acme:\n    keys: [{ env: ACME_KEY }]\n",
        "  acme:\n    keys: [{ env: ACME_KEY }]\n    timezone: Asia/Shanghai\n",
    )
)
EVIL_USER = "<img src=x onerror=alert(1)>"


@dataclass(frozen=True)
class Traffic:
    server: GatewayServer
    records: list[LedgerRecord]

    def get(self, path: str, key: str | None = ADMIN_KEY, **params: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.server.root_url + path, params=params, headers=headers, timeout=30)

    def spend(self, key: str | None = ADMIN_KEY, **params: str) -> httpx.Response:
        return self.get("/admin/reports/spend", key, **params)


def chat(server: GatewayServer, key: str, text: str, model: str = "auto", **extra: Any) -> None:
    answer = httpx.post(
        server.base_url + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}], **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def traffic(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traffic]:
    assert REPORT_CONFIG.count("timezone: Asia/Shanghai") == 1
    assert REPORT_CONFIG.count("output_usd_per_mtok: 10 }") == 1
    mock_upstream.reset()
    data_dir = tmp_path_factory.mktemp("reports-data")
    env = gateway_env(mock_upstream.base_url)
    with GatewayServer(data_dir, env, REPORT_CONFIG) as server:
        mock_upstream.enqueue(
            Reply("We open at nine.", prompt_tokens=1_000, completion_tokens=500),
            Reply("Yes, we ship there.", prompt_tokens=1_000, completion_tokens=500),
            Reply("Here is a summary.", prompt_tokens=2_000, completion_tokens=1_000),
            Reply("Hello globex.", prompt_tokens=300, completion_tokens=100),
        )
        chat(server, ACME_KEY, "When do you open?", user="alice")  # small
        chat(server, ACME_KEY, "Do you ship to Norway?", user=EVIL_USER)  # small
        chat(server, ACME_KEY, "Summarise my contract", model="gpt-4o", user="alice")  # large
        chat(server, ACME_KEY, "When do you open?", user="alice")  # cache hit
        chat(server, GLOBEX_KEY, "Hello there")  # small
        ledger = server.switchboard.runtime.ledger
        ledger.flush()
        records = list(ledger.records(LedgerQuery()))
        yield Traffic(server, records)
    mock_upstream.reset()


def rows_by(doc: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {row[name]: row for row in doc["rows"]}


def test_the_traffic_took_the_expected_routes(traffic: Traffic) -> None:
    assert [(r.tenant, r.route) for r in traffic.records] == [
        ("acme", "small"),
        ("acme", "small"),
        ("acme", "large"),
        ("acme", "cache"),
        ("globex", "small"),
    ]


def test_totals_reconcile_to_the_cent_with_the_configured_prices(traffic: Traffic) -> None:
    response = traffic.spend(tenant="acme", group_by="tier")

    assert response.status_code == 200, response.text
    doc = response.json()
    tiers = rows_by(doc, "tier")
    # small: 1,000 x 0.1 + 500 x 0.2 = 200 micros each; large: 2,000 x 2.5 + 1,000 x 10.
    assert tiers["small"]["cost_micros"] == 2 * 200
    assert tiers["small"]["cost_usd"] == "0.000400"
    assert tiers["large"]["cost_micros"] == 15_000
    assert doc["total"]["cost_micros"] == 15_400
    assert doc["total"]["cost_usd"] == "0.015400"
    assert doc["total"]["requests"] == 4
    assert doc["total"]["input_tokens"] == 1_000 + 1_000 + 2_000 + 1_000
    assert doc["total"]["output_tokens"] == 500 + 500 + 1_000 + 500
    # The baseline: every request's tokens at the large model's prices (7,500 for 1,000 / 500).
    assert doc["total"]["large_cost_micros"] == 3 * 7_500 + 15_000
    assert doc["total"]["savings_usd"] == "0.022100"
    assert sum(r.cost_micros for r in traffic.records if r.tenant == "acme") == 15_400


def test_a_cache_hit_costs_zero_and_counts_its_savings(traffic: Traffic) -> None:
    cache = rows_by(traffic.spend(tenant="acme", group_by="tier").json(), "tier")["cache"]

    assert (cache["requests"], cache["cache_hits"], cache["cost_micros"]) == (1, 1, 0)
    assert cache["savings_micros"] == cache["large_cost_micros"] == 7_500


def test_days_follow_the_tenants_time_zone(traffic: Traffic) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    expected: dict[str, int] = {}
    for record in traffic.records:
        if record.tenant == "acme":
            day = record.ts.astimezone(shanghai).date().isoformat()
            expected[day] = expected.get(day, 0) + 1

    doc = traffic.spend(tenant="acme", group_by="day").json()

    assert doc["time_zone"] == "Asia/Shanghai"
    assert {row["day"]: row["requests"] for row in doc["rows"]} == expected
    assert doc["budget"]["month"]["limit_micros"] is None  # the budget hook is not wired yet


def test_group_by_model_and_user(traffic: Traffic) -> None:
    models = rows_by(traffic.spend(tenant="acme", group_by="model").json(), "model")
    users = rows_by(traffic.spend(tenant="acme", group_by="user").json(), "user")

    assert models["gpt-4o"]["cost_micros"] == 15_000
    # The cache hit is recorded with the model whose answer it replayed, at cost 0.
    assert (models["mock-small"]["requests"], models["mock-small"]["cost_micros"]) == (3, 400)
    assert users["alice"]["requests"] == 3
    assert users[EVIL_USER]["cost_micros"] == 200


def test_csv_has_a_header_and_exact_money(traffic: Traffic) -> None:
    response = traffic.spend(tenant="acme", group_by="tier", format="csv")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = {r["tier"]: r for r in csv.DictReader(io.StringIO(response.text))}
    assert set(rows) == {"cache", "large", "small"}
    assert rows["large"]["cost_usd"] == "0.015000"
    assert rows["large"]["cost_micros"] == "15000"
    assert rows["cache"]["savings_usd"] == "0.007500"


def test_a_tenant_key_reads_its_own_tenant_without_asking(traffic: Traffic) -> None:
    doc = traffic.spend(key=GLOBEX_KEY, group_by="tenant").json()

    assert doc["tenant"] == "globex"
    assert [row["tenant"] for row in doc["rows"]] == ["globex"]
    # 300 x 0.1 + 100 x 0.2 = 50 micros.
    assert doc["total"]["cost_micros"] == 50


def test_a_tenant_key_cannot_read_another_tenant(traffic: Traffic) -> None:
    for path in ("/admin/reports/spend", "/admin/reports"):
        response = traffic.get(path, GLOBEX_KEY, tenant="acme")

        assert response.status_code == 403
        error = response.json()["error"]
        assert error["type"] == "permission_error"
        assert error["param"] == "tenant"
        assert "tenant 'globex'" in error["message"] and "admin key" in error["message"]


def test_the_admin_key_reads_every_tenant(traffic: Traffic) -> None:
    doc = traffic.spend(group_by="tenant").json()

    assert doc["tenant"] is None and doc["budget"] is None
    assert {row["tenant"]: row["requests"] for row in doc["rows"]} == {"acme": 4, "globex": 1}
    assert doc["total"]["cost_micros"] == 15_450


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_reports_need_a_key(traffic: Traffic, key: str | None) -> None:
    for path in ("/admin/reports/spend", "/admin/reports"):
        response = traffic.get(path, key)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("params", "param", "hint"),
    [
        ({"tenant": "initech"}, "tenant", "configured tenants: acme, globex"),
        ({"from": "2026-11-27", "to": "2026-11-26"}, "from", "is not before to"),
        ({"group_by": "colour"}, "group_by", "use day, month, model, tier, user"),
        ({"group_by": ""}, "group_by", "use day, month"),
        ({"group_by": "day,month"}, "group_by", "twice"),
        ({"from": "2026-13-01"}, "from", "use YYYY-MM-DD"),
        ({"to": "yesterday"}, "to", "use YYYY-MM-DD"),
        ({"from": "2026-11-26T09:00:00"}, "from", "no UTC offset"),
        ({"format": "xml"}, "format", "format=json or format=csv"),
        ({"since": "2026-11-01"}, "since", "the older /admin/report took since/until"),
    ],
)
def test_bad_input_is_a_400_that_names_the_fix(
    traffic: Traffic, params: dict[str, str], param: str, hint: str
) -> None:
    response = traffic.spend(**params)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert hint in error["message"]


def test_from_after_to_on_the_html_report_is_a_400_too(traffic: Traffic) -> None:
    response = traffic.get(
        "/admin/reports", tenant="acme", **{"from": "2026-12-01", "to": "2026-11-01"}
    )
    assert response.status_code == 400
    assert "is not before to" in response.json()["error"]["message"]


def test_the_html_report_is_one_page_with_names_escaped(traffic: Traffic) -> None:
    response = traffic.get("/admin/reports", ACME_KEY)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") >= 4
    assert EVIL_USER not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "$0.02" in page  # 15,400 micros, to the cent
