"""Models list, health, CORS and the admin report: what bots, load balancers and finance call."""

from __future__ import annotations

import csv
import io

import httpx
import openai
import pytest

from tests.support.gateway_server import ACME_KEY, ADMIN_KEY, GLOBEX_KEY, GatewayServer
from tests.support.mock_upstream import MockUpstream
from tests.support.openai_spec import SpecValidator


def test_models_list_shows_every_alias_the_tenant_may_send(
    client: openai.OpenAI, spec: SpecValidator
) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["auto", "gpt-4o-mini", "gpt-4o", "small-only"]
    for model in models.data:
        spec.validate("Model", model.model_dump())


def test_models_list_is_scoped_to_the_tenant(gateway: GatewayServer) -> None:
    with openai.OpenAI(base_url=gateway.base_url, api_key=GLOBEX_KEY, max_retries=0) as globex:
        assert [m.id for m in globex.models.list().data] == ["auto", "gpt-4o"]
        with pytest.raises(openai.NotFoundError):
            globex.models.retrieve("gpt-4o-mini")


def test_retrieving_one_model(client: openai.OpenAI) -> None:
    model = client.models.retrieve("gpt-4o")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o", "model", "switchboard")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-5-imaginary")
    assert info.value.code == "model_not_found"


def test_models_need_a_key(gateway: GatewayServer) -> None:
    response = httpx.get(gateway.base_url + "/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_health_and_readiness_answer_without_a_key(gateway: GatewayServer) -> None:
    assert httpx.get(gateway.root_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.root_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"started": True, "ledger": True}}


def test_cors_preflight_from_an_allowed_origin_echoes_requested_headers(
    gateway: GatewayServer,
) -> None:
    response = httpx.options(
        gateway.base_url + "/chat/completions",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-stainless-os",
        },
    )
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "x-stainless-os" in allowed and "authorization" in allowed


def test_cors_preflight_from_another_origin_is_not_allowed(gateway: GatewayServer) -> None:
    response = httpx.options(
        gateway.base_url + "/chat/completions",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert response.headers.get("access-control-allow-origin") != "https://evil.example"


def test_admin_report_sums_the_ledger_per_tenant(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count me"}]}
    for key in (GLOBEX_KEY, GLOBEX_KEY):
        answer = httpx.post(
            gateway.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json=body,
        )
        assert answer.status_code == 200

    report = httpx.get(
        gateway.root_url + "/admin/report",
        params={"tenant": "globex", "group_by": "tenant,route"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert report.status_code == 200
    data = report.json()
    # globex may not pin, so gpt-4o was routed: both requests went to the default small tier.
    assert data["rows"] == [
        {
            **data["rows"][0],
            "tenant": "globex",
            "route": "small",
            "requests": 2,
            "errors": 0,
        }
    ]
    assert data["total"]["cost_micros"] == data["rows"][0]["cost_micros"]
    assert data["total"]["large_cost_micros"] > data["total"]["cost_micros"]

    as_csv = httpx.get(
        gateway.root_url + "/admin/report",
        params={"tenant": "globex", "format": "csv"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert sum(int(r["requests"]) for r in rows) == 2


def test_admin_report_refuses_tenant_keys_and_bad_formats(gateway: GatewayServer) -> None:
    url = gateway.root_url + "/admin/report"
    assert httpx.get(url, headers={"authorization": f"Bearer {ACME_KEY}"}).status_code == 401
    bad = httpx.get(url, params={"format": "xml"}, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert bad.status_code == 400 and "json or csv" in bad.json()["error"]["message"]
    bad_date = httpx.get(
        url, params={"since": "yesterday"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert bad_date.status_code == 400


def test_metrics_are_readable_in_prometheus_format_after_requests(
    client: openai.OpenAI, gateway: GatewayServer
) -> None:
    client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "metrics please"}]
    )

    response = httpx.get(gateway.root_url + "/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    assert "# TYPE switchboard_requests_total counter" in lines
    assert any(
        line.startswith("switchboard_requests_total{")
        and 'tenant="acme"' in line
        and 'route="small"' in line
        for line in lines
    )
    assert any(line.startswith("switchboard_request_duration_seconds_bucket{") for line in lines)
