from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from aiohttp import web
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.api.metrics import metrics
from gateway.chat import parse_chat_request
from gateway.config import TelemetryConfig, parse_config
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, UpstreamUnavailable
from gateway.pipeline.context import CLIENT_CLOSED, RequestContext
from gateway.pipeline.core import Pipeline
from gateway.routing.policy import RoutingDecision
from gateway.runtime import Runtime, build_runtime
from gateway.telemetry import (
    MAX_SERIES,
    PROMETHEUS_CONTENT_TYPE,
    Counter,
    ObserveStage,
    Telemetry,
    escape_label_value,
    prometheus_name,
    render_prometheus,
)
from gateway.tiers.base import Completion
from gateway.usage import Usage
from tests.support.fakes import FakeLedger

CONFIG = """
upstreams:
  local: { base_url: "http://127.0.0.1:11434/v1", local: true }
  hosted: { base_url: "http://127.0.0.1:11435/v1", local: true }
tiers:
  small: { upstream: local, model: tiny }
  large: { upstream: hosted, model: big }
router:
  default: small
tenants:
  acme:
    keys: [{ env: ACME_KEY }]
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    loaded = parse_config(CONFIG, source="telemetry.yaml", env={"ACME_KEY": "sk-acme"})
    return build_runtime(
        loaded,
        data_dir=tmp_path_factory.mktemp("telemetry"),
        ledger=FakeLedger(),  # type: ignore[arg-type]
        env={"ACME_KEY": "sk-acme"},
        announce=lambda _: None,
        warn=lambda _: None,
        tiers={},
    )


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter) -> Iterator[Telemetry]:
    t = Telemetry.from_config(TelemetryConfig(service_name="switchboard-test"), span_exporter=spans)
    yield t
    t.shutdown()


def finished(
    runtime: Runtime,
    *,
    body: dict[str, Any] | None = None,
    tenant: str | None = "acme",
    route: str | None = "small",
    served_by: str | None = "small",
    model: str | None = "tiny",
    usage: Usage | None = None,
    cost_micros: int = 0,
    headers: dict[str, str] | None = None,
) -> RequestContext:
    """A context as a finished request leaves it (the fields the stages before set)."""

    async def read_body() -> bytes:
        return b""

    ctx = RequestContext(
        runtime=runtime,
        request_id="req-1",
        headers=headers or {},
        read_body=read_body,
    )
    ctx.tenant = tenant
    if body is not None:
        ctx.request, ctx.payload = parse_chat_request(msgspec.json.encode(body))
    if route is not None:
        ctx.decision = RoutingDecision(route=route, reasons=("default tier",))
    ctx.served_by = served_by
    ctx.model = model
    ctx.usage = usage
    ctx.cost_micros = cost_micros
    return ctx


CHAT = {
    "model": "auto",
    "messages": [{"role": "user", "content": "Where is my parcel?"}],
    "max_tokens": 64,
    "temperature": 0.2,
}


async def observe(stage: ObserveStage, ctx: RequestContext) -> None:
    await stage.enter(ctx)
    await stage.exit(ctx)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name{labels...}`` in a Prometheus text page."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    found = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        present = set(label_text.rstrip("}").split(",")) if label_text else set()
        if wanted <= present:
            found.append(float(value))
    assert len(found) == 1, f"expected one {name}{labels} sample, found {found}:\n{text}"
    return found[0]


async def test_span_is_a_server_span_named_after_the_requested_model_with_genai_attributes(
    runtime: Runtime, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    ctx = finished(
        runtime, body=CHAT, usage=Usage(prompt_tokens=12, completion_tokens=5), cost_micros=1234
    )
    await observe(ObserveStage(telemetry), ctx)

    (span,) = spans.get_finished_spans()
    assert span.name == "chat auto"
    assert span.kind is SpanKind.SERVER
    assert span.status.status_code is StatusCode.UNSET
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "auto"
    assert attrs["gen_ai.response.model"] == "tiny"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["switchboard.tenant"] == "acme"
    assert attrs["switchboard.route"] == "small"
    assert attrs["switchboard.cost_usd"] == 0.001234
    assert attrs["switchboard.request_id"] == "req-1"
    assert attrs["switchboard.fallback_attempts"] == 0
    assert attrs["switchboard.reason"] == "default tier"
    assert attrs["http.response.status_code"] == 200
    assert span.resource.attributes["service.name"] == "switchboard-test"
    assert ctx.span is None  # ended once: a second exit records nothing twice


async def test_failed_request_sets_error_status_with_the_error_code(
    runtime: Runtime, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    ctx = finished(runtime, body=CHAT, served_by=None)
    ctx.attempts = ["small: 503 upstream_unavailable: full"]
    ctx.fail(UpstreamUnavailable("the small tier is full"))
    await observe(ObserveStage(telemetry), ctx)

    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "upstream_unavailable"
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "upstream_unavailable"
    assert attrs["http.response.status_code"] == 503
    assert attrs["switchboard.fallback_attempts"] == 1


async def test_request_refused_before_parsing_gets_a_plain_chat_span(
    runtime: Runtime, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    ctx = finished(runtime, tenant=None, route=None, served_by=None, model=None)
    ctx.fail(AuthenticationFailed("Incorrect API key provided."))
    await observe(ObserveStage(telemetry), ctx)

    (span,) = spans.get_finished_spans()
    assert span.name == "chat"
    assert span.status.status_code is StatusCode.ERROR
    assert "switchboard.tenant" not in (span.attributes or {})
    page = render_prometheus(telemetry)
    assert (
        sample(
            page,
            "switchboard_requests_total",
            tenant="none",
            route="none",
            model="none",
            status_class="4xx",
        )
        == 1
    )
    assert "switchboard_tokens_total{" not in page  # nothing was generated


class AnswerAndBill:
    """Stands in for the stages after telemetry: answers in ``enter``, bills in ``exit``."""

    name = "answer"

    def __init__(self, fail: GatewayError | None = None) -> None:
        self.fail = fail

    async def enter(self, ctx: RequestContext) -> None:
        if self.fail is not None:
            raise self.fail
        ctx.request, ctx.payload = parse_chat_request(msgspec.json.encode(CHAT))
        ctx.tenant = "acme"
        ctx.served_by, ctx.model = "large", "big"
        ctx.completion = Completion(body={}, model="big", usage=Usage(3, 4))

    async def exit(self, ctx: RequestContext) -> None:
        ctx.usage = Usage(3, 4)
        ctx.cost_micros = 500


async def test_first_in_the_pipeline_its_exit_runs_last_and_sees_the_final_cost(
    runtime: Runtime, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    pipeline = Pipeline([ObserveStage(telemetry), AnswerAndBill()])
    ctx = finished(runtime, tenant=None, route=None, served_by=None, model=None)
    await pipeline.start(ctx)
    assert ctx.span is not None and ctx.span.is_recording()  # open while the answer streams
    await pipeline.finish(ctx)

    (span,) = spans.get_finished_spans()
    assert span.name == "chat auto"
    assert (span.attributes or {})["switchboard.cost_usd"] == 0.0005
    assert (span.attributes or {})["gen_ai.system"] == "openai"
    page = render_prometheus(telemetry)
    assert sample(page, "switchboard_cost_micros_total", tenant="acme", route="large") == 500


async def test_a_stage_that_fails_after_telemetry_still_ends_the_span_as_an_error(
    runtime: Runtime, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    pipeline = Pipeline([ObserveStage(telemetry), AnswerAndBill(fail=InvalidRequest("bad"))])
    ctx = finished(runtime, tenant=None, route=None, served_by=None, model=None)
    with pytest.raises(InvalidRequest):
        await pipeline.start(ctx)
    await pipeline.finish(ctx)

    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["http.response.status_code"] == 400


async def test_incoming_traceparent_makes_the_span_a_child_of_the_callers_trace(
    runtime: Runtime, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    await observe(ObserveStage(telemetry), finished(runtime, body=CHAT, headers=headers))

    (span,) = spans.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == trace_id
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"


async def test_metrics_render_in_prometheus_text_with_labels_and_values(
    runtime: Runtime, telemetry: Telemetry
) -> None:
    stage = ObserveStage(telemetry)
    usage = Usage(prompt_tokens=12, completion_tokens=5)
    for _ in range(2):
        await observe(stage, finished(runtime, body=CHAT, usage=usage, cost_micros=1000))

    page = render_prometheus(telemetry)
    small = {"tenant": "acme", "route": "small"}
    assert "# TYPE switchboard_requests_total counter" in page
    assert (
        sample(page, "switchboard_requests_total", **small, model="tiny", status_class="2xx") == 2
    )
    assert sample(page, "switchboard_tokens_total", **small, direction="input") == 24
    assert sample(page, "switchboard_tokens_total", **small, direction="output") == 10
    assert sample(page, "switchboard_cost_micros_total", **small) == 2000
    assert "# TYPE switchboard_request_duration_seconds histogram" in page
    assert sample(page, "switchboard_request_duration_seconds_count", **small) == 2
    assert sample(page, "switchboard_request_duration_seconds_bucket", **small, le="+Inf") == 2
    assert sample(page, "switchboard_request_duration_seconds_sum", **small) > 0
    tokens = {"gen_ai_token_type": "input", "gen_ai_system": "openai"}
    assert sample(page, "gen_ai_client_token_usage_count", **tokens) == 2
    assert sample(page, "gen_ai_client_token_usage_sum", **tokens) == 24
    assert sample(page, "gen_ai_client_token_usage_bucket", **tokens, le="16.0") == 2
    assert sample(page, "gen_ai_client_token_usage_bucket", **tokens, le="4.0") == 0
    models = {"gen_ai_request_model": "auto", "gen_ai_response_model": "tiny"}
    assert sample(page, "gen_ai_client_operation_duration_seconds_count", **models) == 2
    (info,) = [line for line in page.splitlines() if line.startswith("target_info{")]
    assert 'service_name="switchboard-test"' in info
    assert page.endswith("\n")


async def test_cache_hits_and_fallbacks_are_counted(runtime: Runtime, telemetry: Telemetry) -> None:
    stage = ObserveStage(telemetry)
    hit = finished(runtime, body=CHAT, route=None, served_by="cache", usage=Usage(12, 5))
    await observe(stage, hit)
    fell_back = finished(runtime, body=CHAT, served_by="large", model="big", usage=Usage(12, 5))
    fell_back.attempts = ["small: 503 upstream_unavailable: full"]
    await observe(stage, fell_back)
    # Every tier failed: the last failure fell back to nothing.
    failed = finished(runtime, body=CHAT, served_by=None)
    failed.attempts = ["small: 503 upstream_unavailable: full", "large: 504 upstream_timeout: x"]
    failed.fail(UpstreamUnavailable("all tiers failed"))
    await observe(stage, failed)

    page = render_prometheus(telemetry)
    assert sample(page, "switchboard_cache_hits_total", tenant="acme") == 1
    assert sample(page, "switchboard_fallbacks_total", tenant="acme", from_route="small") == 2
    assert 'from_route="large"' not in page
    assert sample(page, "switchboard_cost_micros_total", tenant="acme", route="cache") == 0
    # A cache hit is not a model call: no GenAI client metrics for it.
    assert 'gen_ai_system="switchboard"' not in page
    assert (
        sample(
            page,
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_system="openai",
            error_type="upstream_unavailable",
        )
        == 1
    )


async def test_client_disconnect_counts_as_4xx_without_error_status(
    runtime: Runtime, telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    ctx = finished(runtime, body=CHAT, usage=Usage(12, 3, estimated=True))
    ctx.status = CLIENT_CLOSED
    await observe(ObserveStage(telemetry), ctx)

    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["switchboard.usage_estimated"] is True
    page = render_prometheus(telemetry)
    assert (
        sample(
            page,
            "switchboard_requests_total",
            tenant="acme",
            route="small",
            model="tiny",
            status_class="4xx",
        )
        == 1
    )


async def test_label_values_are_escaped(telemetry: Telemetry) -> None:
    with telemetry.metrics.lock:
        telemetry.metrics.cache_hits.add(1, ('a"b\\c\nd',))
    page = render_prometheus(telemetry)
    assert 'switchboard_cache_hits_total{tenant="a\\"b\\\\c\\nd"} 1' in page
    assert escape_label_value('say "hi"\\') == 'say \\"hi\\"\\\\'


def test_prometheus_names_follow_the_otel_conversion() -> None:
    assert prometheus_name("switchboard.requests", "{request}", counter=True) == (
        "switchboard_requests_total"
    )
    assert prometheus_name("switchboard.request.duration", "s") == (
        "switchboard_request_duration_seconds"
    )
    assert prometheus_name("gen_ai.client.token.usage", "{token}") == "gen_ai_client_token_usage"
    assert prometheus_name("queue.size", "By") == "queue_size_bytes"
    assert prometheus_name("x.rate", "1/s") == "x_rate_per_s"


def test_render_without_prometheus_is_refused() -> None:
    telemetry = Telemetry.from_config(TelemetryConfig(prometheus=False))
    try:
        assert not telemetry.prometheus
        with pytest.raises(ValueError, match="telemetry.prometheus"):
            render_prometheus(telemetry)
    finally:
        telemetry.shutdown()
        telemetry.shutdown()  # idempotent


async def test_stage_costs_microseconds_per_request(runtime: Runtime) -> None:
    """Not a timing assertion (benchmarks measure speed): prints µs per request for the record."""
    telemetry = Telemetry.from_config(TelemetryConfig())  # no exporter: spans are still recorded
    stage = ObserveStage(telemetry)
    usage = Usage(prompt_tokens=12, completion_tokens=5)
    n = 2000
    spent = 0.0
    for _ in range(n):
        ctx = finished(runtime, body=CHAT, usage=usage, cost_micros=10)
        # CPU time of this thread: the machine may be busy with other work.
        begin = time.thread_time()
        await stage.enter(ctx)
        await stage.exit(ctx)
        spent += time.thread_time() - begin
    print(f"ObserveStage enter+exit: {spent / n * 1e6:.1f} µs per request")
    assert "switchboard_requests_total{" in render_prometheus(telemetry)
    telemetry.shutdown()


def test_new_label_sets_beyond_the_series_limit_share_one_overflow_series() -> None:
    counter = Counter("x.requests", "{request}", "", ("model",))
    for i in range(MAX_SERIES + 5):
        counter.add(1, (f"model-{i}",))
    assert len(counter.series) == MAX_SERIES + 1
    assert counter.series[("overflow",)] == 5
    counter.add(1, ("model-0",))  # known series keep counting
    assert counter.series[("model-0",)] == 2


# --- GET /metrics -----------------------------------------------------------------------------


def metrics_app(telemetry: Telemetry | None) -> Litestar:
    app = Litestar(route_handlers=[metrics])
    app.state.switchboard = SimpleNamespace(telemetry=telemetry)
    return app


async def test_metrics_endpoint_serves_prometheus_text(
    runtime: Runtime, telemetry: Telemetry
) -> None:
    await observe(ObserveStage(telemetry), finished(runtime, body=CHAT, usage=Usage(1, 1)))
    with TestClient(metrics_app(telemetry)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == PROMETHEUS_CONTENT_TYPE
    assert "switchboard_requests_total{" in response.text


@pytest.mark.parametrize("prometheus", [False, None], ids=["prometheus-off", "telemetry-off"])
def test_metrics_endpoint_is_404_with_an_openai_error_when_off(prometheus: bool | None) -> None:
    telemetry = None
    if prometheus is not None:
        telemetry = Telemetry.from_config(TelemetryConfig(prometheus=prometheus))
    try:
        with TestClient(metrics_app(telemetry)) as client:
            response = client.get("/metrics")
    finally:
        if telemetry is not None:
            telemetry.shutdown()
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_url"
    assert "telemetry.prometheus" in error["message"]


# --- OTLP/HTTP export, end to end on loopback ---------------------------------------------------


class Collector:
    """An OTLP/HTTP receiver on 127.0.0.1 that keeps every POST body by path."""

    def __init__(self) -> None:
        self.posts: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}
        self.endpoint = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.posts[request.path].append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.handle)
    app.router.add_post("/v1/metrics", received.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    received.endpoint = f"http://127.0.0.1:{port}"
    yield received
    await runner.cleanup()


async def test_otlp_endpoint_receives_spans_and_metrics_on_shutdown(
    runtime: Runtime, collector: Collector, tmp_path: Path
) -> None:
    cfg = TelemetryConfig(otlp_endpoint=collector.endpoint + "/", export_interval_s=3600)
    telemetry = Telemetry.from_config(cfg)
    ctx = finished(runtime, body=CHAT, usage=Usage(12, 5), cost_micros=7)
    await observe(ObserveStage(telemetry), ctx)
    # The exporters block on HTTP: keep the event loop (and the collector on it) free.
    await asyncio.to_thread(telemetry.shutdown)

    assert collector.posts["/v1/traces"], "no spans were exported"
    traces = ExportTraceServiceRequest()
    traces.ParseFromString(collector.posts["/v1/traces"][0])
    exported = traces.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in exported] == ["chat auto"]
    attrs = {a.key: a.value for a in exported[0].attributes}
    assert attrs["gen_ai.usage.input_tokens"].int_value == 12
    service = {a.key: a.value.string_value for a in traces.resource_spans[0].resource.attributes}
    assert service["service.name"] == "switchboard"

    assert collector.posts["/v1/metrics"], "no metrics were exported"
    names: set[str] = set()
    for body in collector.posts["/v1/metrics"]:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                names.update(m.name for m in sm.metrics)
    assert {"switchboard.requests", "switchboard.cost_micros", "gen_ai.client.token.usage"} <= (
        names
    )
