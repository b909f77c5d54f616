"""OpenTelemetry traces and metrics for every chat request, and their Prometheus rendering.

Each ``Telemetry`` owns its own ``TracerProvider`` and metric store; nothing global is set, so
several gateways (tests build many) live in one process without sharing spans or counters.
``ObserveStage`` is the pipeline's first stage: its ``enter`` starts the request's span, its
``exit`` (which runs last, after the ledger) names it, sets the GenAI attributes, ends it and
records the metrics. Exporting is optional: OTLP/HTTP when ``telemetry.otlp_endpoint`` is set
(credentials go in the standard ``OTEL_EXPORTER_OTLP_HEADERS`` variable), Prometheus text on
``GET /metrics`` when ``telemetry.prometheus`` is on.

Why metrics are not recorded through the SDK's ``MeterProvider``: one ``Counter.add`` there costs
about 10 µs on this project's machines (it cleans, sorts and hashes the attributes on every call)
and a request records eight measurements. Here a measurement is a dict update under one lock
(well under 1 µs); at collection the store emits the SDK's own ``MetricsData`` (cumulative), which
the OTLP metric exporter sends unchanged and ``render_prometheus`` turns into text.

Metrics, by their OpenTelemetry name and the name Prometheus scrapes (dots become underscores,
the unit is appended, counters end in ``_total``, ``{...}`` units are annotations and dropped):

    switchboard.requests              counter    switchboard_requests_total
        tenant, route, model, status_class (2xx|4xx|5xx)
    switchboard.tokens                counter    switchboard_tokens_total
        tenant, route, direction (input|output)
    switchboard.cost_micros           counter    switchboard_cost_micros_total   (micro-USD)
        tenant, route
    switchboard.request.duration      histogram  switchboard_request_duration_seconds
        tenant, route
    switchboard.cache.hits            counter    switchboard_cache_hits_total
        tenant
    switchboard.fallbacks             counter    switchboard_fallbacks_total
        tenant, from_route
    switchboard.handoffs              counter    switchboard_handoffs_total
        tenant, reason (legal_threat, human_request, anger, intent:NAME, repeated_question)
    switchboard.cascade               counter    switchboard_cascade_total
        tenant, outcome (kept, escalated, unjudged)
    gen_ai.client.token.usage         histogram  gen_ai_client_token_usage
        gen_ai.operation.name, gen_ai.system, gen_ai.request.model, gen_ai.response.model,
        gen_ai.token.type (input|output)
    gen_ai.client.operation.duration  histogram  gen_ai_client_operation_duration_seconds
        gen_ai.operation.name, gen_ai.system, gen_ai.request.model, gen_ai.response.model,
        error.type

The GenAI client metrics (semantic conventions) count only requests a model tier answered or
failed, not cache hits nor handoff holding answers. Nothing here holds request or answer text.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.config import TelemetryConfig, UpstreamConfig
from gateway.money import MICROS_PER_USD
from gateway.pipeline.cascade import DISCARDED
from gateway.pipeline.context import RequestContext

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "Counter",
    "Histogram",
    "ObserveStage",
    "RequestMetrics",
    "Telemetry",
    "escape_label_value",
    "prometheus_name",
    "render_prometheus",
]

log = logging.getLogger("gateway.telemetry")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Label value for "not known" (no tenant before auth, no model before routing).
NONE = "none"
# Series one instrument keeps before new label sets share one overflow series (as OTel's
# cardinality limit does): model names come from upstream responses, so bound them.
MAX_SERIES = 2000
OVERFLOW = "overflow"
# Seconds an OTLP export may take (retries included) before it is dropped; also bounds shutdown.
_EXPORT_TIMEOUT_S = 5.0
# The GenAI semantic conventions' advised buckets.
_GENAI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_GENAI_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
# Cache hits answer in about a millisecond; hosted models take seconds.
_REQUEST_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# litellm's provider prefixes that the GenAI conventions name differently.
_GENAI_SYSTEMS = {
    "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "azure": "az.ai.openai",
}
_PROPAGATOR = TraceContextTextMapPropagator()
_CUMULATIVE = AggregationTemporality.CUMULATIVE

LabelValues = tuple[str, ...]


# --- metrics ----------------------------------------------------------------------------------


class _Instrument:
    """One metric: its name, unit, help text and label names; series keyed by label values.

    Updates must hold the owning ``RequestMetrics.lock`` (the stage takes it once per request).
    """

    def __init__(self, name: str, unit: str, description: str, labels: Sequence[str]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.labels = tuple(labels)
        self._overflow: LabelValues = (OVERFLOW,) * len(self.labels)

    def _key(self, series: Mapping[LabelValues, object], values: LabelValues) -> LabelValues:
        if values in series or len(series) < MAX_SERIES:
            return values
        return self._overflow

    def _attributes(self, values: LabelValues) -> dict[str, str]:
        # An empty value means "not applicable" (``error.type`` of a success): leave it out.
        return {k: v for k, v in zip(self.labels, values, strict=True) if v}


class Counter(_Instrument):
    """A monotonic sum per label set."""

    def __init__(self, name: str, unit: str, description: str, labels: Sequence[str]) -> None:
        super().__init__(name, unit, description, labels)
        self.series: dict[LabelValues, int | float] = {}

    def add(self, amount: float, values: LabelValues) -> None:
        series = self.series
        key = self._key(series, values)
        series[key] = series.get(key, 0) + amount

    def collect(self, start_ns: int, now_ns: int) -> Metric:
        points = [
            NumberDataPoint(self._attributes(values), start_ns, now_ns, value)
            for values, value in self.series.items()
        ]
        data = Sum(points, aggregation_temporality=_CUMULATIVE, is_monotonic=True)
        return Metric(self.name, self.description, self.unit, data)


class _Buckets:
    __slots__ = ("counts", "max", "min", "sum", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum: float = 0
        self.total = 0
        self.min = math.inf
        self.max = -math.inf


class Histogram(_Instrument):
    """Explicit-bucket histogram per label set; a bucket holds values in (previous, bound]."""

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        labels: Sequence[str],
        bounds: Sequence[float],
    ) -> None:
        super().__init__(name, unit, description, labels)
        self.bounds = tuple(float(b) for b in bounds)
        self.series: dict[LabelValues, _Buckets] = {}

    def record(self, value: float, values: LabelValues) -> None:
        series = self.series
        buckets = series.get(values)
        if buckets is None:
            key = self._key(series, values)
            buckets = series.get(key)
            if buckets is None:
                buckets = series[key] = _Buckets(len(self.bounds) + 1)
        buckets.counts[bisect_left(self.bounds, value)] += 1
        buckets.sum += value
        buckets.total += 1
        if value < buckets.min:
            buckets.min = value
        if value > buckets.max:
            buckets.max = value

    def collect(self, start_ns: int, now_ns: int) -> Metric:
        points = [
            HistogramDataPoint(
                attributes=self._attributes(values),
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=b.total,
                sum=b.sum,
                bucket_counts=list(b.counts),
                explicit_bounds=self.bounds,
                min=b.min,
                max=b.max,
            )
            for values, b in self.series.items()
        ]
        data = HistogramData(points, aggregation_temporality=_CUMULATIVE)
        return Metric(self.name, self.description, self.unit, data)


class RequestMetrics:
    """The gateway's instruments and their cumulative values since start."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.lock = threading.Lock()
        self.start_ns = time.time_ns()
        self._scope = InstrumentationScope("gateway", __version__)
        self.requests = Counter(
            "switchboard.requests",
            "{request}",
            "Chat requests by tenant, route and outcome.",
            ("tenant", "route", "model", "status_class"),
        )
        self.tokens = Counter(
            "switchboard.tokens",
            "{token}",
            "Tokens billed, by direction (input|output).",
            ("tenant", "route", "direction"),
        )
        self.cost = Counter(
            "switchboard.cost_micros",
            "{micro_usd}",
            "What requests cost, in micro-USD.",
            ("tenant", "route"),
        )
        self.duration = Histogram(
            "switchboard.request.duration",
            "s",
            "Time from receiving a chat request to its last byte.",
            ("tenant", "route"),
            _REQUEST_DURATION_BUCKETS,
        )
        self.cache_hits = Counter(
            "switchboard.cache.hits",
            "{hit}",
            "Requests answered from the response cache.",
            ("tenant",),
        )
        self.fallbacks = Counter(
            "switchboard.fallbacks",
            "{fallback}",
            "Tier failures that fell back to another tier.",
            ("tenant", "from_route"),
        )
        self.handoffs = Counter(
            "switchboard.handoffs",
            "{request}",
            "Requests with a human-handoff signal, by reason.",
            ("tenant", "reason"),
        )
        self.cascade = Counter(
            "switchboard.cascade",
            "{request}",
            "Small-tier answers the cascade judged, by outcome.",
            ("tenant", "outcome"),
        )
        genai = ("gen_ai.operation.name", "gen_ai.system", "gen_ai.request.model")
        self.genai_token_usage = Histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Number of input and output tokens used per model call.",
            (*genai, "gen_ai.response.model", "gen_ai.token.type"),
            _GENAI_TOKEN_BUCKETS,
        )
        self.genai_duration = Histogram(
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration.",
            (*genai, "gen_ai.response.model", "error.type"),
            _GENAI_DURATION_BUCKETS,
        )
        self.instruments: tuple[Counter | Histogram, ...] = (
            self.requests,
            self.tokens,
            self.cost,
            self.duration,
            self.cache_hits,
            self.fallbacks,
            self.handoffs,
            self.cascade,
            self.genai_token_usage,
            self.genai_duration,
        )

    def collect(self) -> MetricsData:
        """A snapshot in the SDK's data model (what OTLP exporters take); empty series omitted."""
        now_ns = time.time_ns()
        with self.lock:
            metrics = [
                i.collect(self.start_ns, now_ns) for i in self.instruments if i.series
            ]  # fmt: skip
        scope = ScopeMetrics(self._scope, metrics, schema_url="")
        return MetricsData([ResourceMetrics(self.resource, [scope], schema_url="")])


class _PeriodicMetricExport:
    """Sends the metric store to an exporter every interval from a daemon thread, and once more
    on ``stop`` so the last interval's requests are not lost."""

    def __init__(
        self, collect: Callable[[], MetricsData], exporter: MetricExporter, interval_s: float
    ) -> None:
        self._collect = collect
        self._exporter = exporter
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="switchboard-otlp-metrics", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.export()

    def export(self) -> None:
        try:
            self._exporter.export(self._collect(), timeout_millis=_EXPORT_TIMEOUT_S * 1000)
        except Exception:  # noqa: BLE001 - a collector that is down must not kill the thread
            log.exception("could not export metrics over OTLP")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=_EXPORT_TIMEOUT_S * 2)
        self.export()
        self._exporter.shutdown()


# --- the providers ----------------------------------------------------------------------------


class Telemetry:
    """One gateway's tracer and metrics; ``shutdown()`` flushes and stops the exporters."""

    def __init__(
        self,
        *,
        service_name: str = "switchboard",
        prometheus: bool = True,
        otlp_endpoint: str | None = None,
        export_interval_s: float = 15.0,
        span_exporter: SpanExporter | None = None,
        extra_span_processors: Sequence[SpanProcessor] = (),
    ) -> None:
        self.resource = Resource.create({SERVICE_NAME: service_name, SERVICE_VERSION: __version__})
        # No atexit hook: the app's lifespan calls ``shutdown``, and tests build many of these.
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        self.metrics = RequestMetrics(self.resource)
        self.prometheus = prometheus
        self._metric_export: _PeriodicMetricExport | None = None
        if otlp_endpoint:
            # Imported here: protobuf and the exporters load only when a config exports.
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            base = otlp_endpoint.rstrip("/")
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=_EXPORT_TIMEOUT_S)
                )
            )
            self._metric_export = _PeriodicMetricExport(
                self.metrics.collect,
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=_EXPORT_TIMEOUT_S),
                export_interval_s,
            )
        if span_exporter is not None:
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        for processor in extra_span_processors:
            self.tracer_provider.add_span_processor(processor)
        self.tracer = self.tracer_provider.get_tracer("gateway", __version__)
        # Spans nobody exports are pure cost (~70 µs a request under load): make none then.
        self.traces_exported = bool(otlp_endpoint or span_exporter or extra_span_processors)
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_config(
        cls,
        cfg: TelemetryConfig,
        *,
        span_exporter: SpanExporter | None = None,
        extra_span_processors: Sequence[SpanProcessor] = (),
    ) -> Telemetry:
        return cls(
            service_name=cfg.service_name,
            prometheus=cfg.prometheus,
            otlp_endpoint=cfg.otlp_endpoint,
            export_interval_s=cfg.export_interval_s,
            span_exporter=span_exporter,
            extra_span_processors=extra_span_processors,
        )

    def render_prometheus(self) -> str:
        return render_prometheus(self)

    def force_flush(self) -> None:
        """Export what is buffered now (blocks on the network: from async code use a thread)."""
        self.tracer_provider.force_flush(int(_EXPORT_TIMEOUT_S * 1000))
        if self._metric_export is not None:
            self._metric_export.export()

    def shutdown(self) -> None:
        """Flush and stop the tracer provider and the metric export. Idempotent; blocks on the
        network when exporting (from async code: ``await anyio.to_thread.run_sync(...)``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.tracer_provider.force_flush(int(_EXPORT_TIMEOUT_S * 1000))
            self.tracer_provider.shutdown()
        except Exception:  # noqa: BLE001 - a collector that is down must not block shutdown
            log.exception("could not flush spans at shutdown")
        if self._metric_export is not None:
            self._metric_export.stop()


# --- the pipeline stage -----------------------------------------------------------------------


class ObserveStage:
    """The pipeline's first stage: a span per request and the request metrics.

    The span lives on ``ctx.span`` rather than in the current context: a stream's ``exit`` runs in
    the task that sends the stream, not the one that started the request.
    """

    name = "telemetry"

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._tracer = telemetry.tracer
        self._metrics = telemetry.metrics
        self._systems_of: tuple[object, Mapping[str, str]] | None = None

    async def enter(self, ctx: RequestContext) -> None:
        if not self.telemetry.traces_exported:
            return  # metrics only: ``exit`` records them without a span
        # The model is not known yet (the body is parsed later): ``exit`` renames the span.
        parent = _PROPAGATOR.extract(ctx.headers) if "traceparent" in ctx.headers else None
        ctx.span = self._tracer.start_span("chat", context=parent, kind=SpanKind.SERVER)

    async def exit(self, ctx: RequestContext) -> None:
        span, ctx.span = ctx.span, None
        request = ctx.request
        route = ctx.route
        usage = ctx.usage
        input_tokens = usage.prompt_tokens if usage is not None else 0
        output_tokens = usage.completion_tokens if usage is not None else 0
        seconds = ctx.elapsed_ms() / 1000.0
        system = self._systems(ctx.runtime).get(route, "switchboard")
        error = ctx.error
        error_type = (error.code or error.type) if error is not None else None

        if span is not None and span.is_recording():
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": system,
                "switchboard.request_id": ctx.request_id,
                "switchboard.route": route,
                "switchboard.fallback_attempts": len(_failures(ctx.attempts)),
                # For display only (a float reads and filters well in trace UIs); the ledger
                # holds the exact amount.
                "switchboard.cost_usd": ctx.cost_micros / MICROS_PER_USD,
                "http.response.status_code": ctx.status,
            }
            if ctx.tenant is not None:
                attrs["switchboard.tenant"] = ctx.tenant
            if ctx.handoff is not None:
                attrs["switchboard.handoff"] = ctx.handoff
            if ctx.cascade is not None:
                attrs["switchboard.cascade"] = ctx.cascade.outcome
            if request is not None:
                span.update_name(f"chat {request.model}")
                attrs["gen_ai.request.model"] = request.model
                max_tokens = request.max_completion_tokens or request.max_tokens
                if max_tokens is not None:
                    attrs["gen_ai.request.max_tokens"] = max_tokens
                temperature = ctx.payload.get("temperature")
                if isinstance(temperature, int | float) and not isinstance(temperature, bool):
                    attrs["gen_ai.request.temperature"] = float(temperature)
            if ctx.model is not None:
                attrs["gen_ai.response.model"] = ctx.model
            if usage is not None:
                attrs["gen_ai.usage.input_tokens"] = input_tokens
                attrs["gen_ai.usage.output_tokens"] = output_tokens
                if usage.estimated:
                    attrs["switchboard.usage_estimated"] = True
            if ctx.decision is not None and ctx.decision.reasons:
                attrs["switchboard.reason"] = "; ".join(ctx.decision.reasons)
            if ctx.attempts:
                attrs["switchboard.attempts"] = tuple(ctx.attempts)
            if error_type is not None:
                attrs["error.type"] = error_type
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.set_attributes(attrs)
        if span is not None:
            span.end()

        tenant = ctx.tenant or NONE
        status_class = _STATUS_CLASSES[min(max(ctx.status // 100, 1), 5) - 1]
        m = self._metrics
        with m.lock:
            m.requests.add(1, (tenant, route, ctx.model or NONE, status_class))
            m.duration.record(seconds, (tenant, route))
            if ctx.handoff is not None:
                m.handoffs.add(1, (tenant, ctx.handoff))
            if ctx.cascade is not None:
                m.cascade.add(1, (tenant, ctx.cascade.outcome))
            if route == NONE:
                return  # refused before routing: nothing was generated or billed
            m.tokens.add(input_tokens, (tenant, route, "input"))
            m.tokens.add(output_tokens, (tenant, route, "output"))
            m.cost.add(ctx.cost_micros, (tenant, route))
            if ctx.attempts:
                # ``attempts`` holds every failed tier ("small: 503 ..."); the last one fell back
                # to nothing when no tier answered in the end.
                failures = _failures(ctx.attempts)
                failed = failures if ctx.served_by is not None else failures[:-1]
                for attempt in failed:
                    m.fallbacks.add(1, (tenant, attempt.partition(":")[0]))
            if route == "cache":
                m.cache_hits.add(1, (tenant,))
                return
            if route == "handoff":
                return  # a holding answer: no model was called
            requested = request.model if request is not None else NONE
            genai = ("chat", system, requested, ctx.model or NONE)
            if usage is not None:
                m.genai_token_usage.record(input_tokens, (*genai, "input"))
                m.genai_token_usage.record(output_tokens, (*genai, "output"))
            m.genai_duration.record(seconds, (*genai, error_type or ""))

    def _systems(self, runtime: Runtime) -> Mapping[str, str]:
        """``gen_ai.system`` per route, computed once per loaded config (reloads swap it)."""
        loaded = runtime.loaded
        cached = self._systems_of
        if cached is not None and cached[0] is loaded:
            return cached[1]
        config = loaded.config
        systems = {"cache": "switchboard", NONE: "switchboard"}
        for name, tier in config.tiers.configured().items():
            upstream = config.upstreams.get(tier.upstream)
            if upstream is not None:
                systems[name] = _genai_system(upstream, tier.model)
        self._systems_of = (loaded, systems)
        return systems


def _genai_system(upstream: UpstreamConfig, model: str) -> str:
    if upstream.kind == "litellm":
        provider, slash, _ = model.partition("/")
        return _GENAI_SYSTEMS.get(provider, provider) if slash else "litellm"
    return upstream.kind  # "openai" (OpenAI-compatible servers) or "llama_cpp"


# --- Prometheus text exposition format 0.0.4 --------------------------------------------------

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]+")
_UNIT_WORDS = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "%": "percent",
    "1": "",
}


def render_prometheus(telemetry: Telemetry) -> str:
    """Every metric's current value in Prometheus' text format 0.0.4 (for ``GET /metrics``)."""
    if not telemetry.prometheus:
        raise ValueError("Prometheus rendering is off (config: telemetry.prometheus: true)")
    lines: list[str] = []
    for resource_metrics in telemetry.metrics.collect().resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                _render_metric(metric, lines)
    # The resource as Prometheus' convention has it: one `target_info` gauge.
    info = {k: v for k, v in telemetry.resource.attributes.items() if isinstance(v, str)}
    lines.append("# HELP target_info Target metadata")
    lines.append("# TYPE target_info gauge")
    lines.append(f"target_info{_labels(_label_pairs(info))} 1")
    return "\n".join(lines) + "\n"


def prometheus_name(name: str, unit: str, *, counter: bool = False) -> str:
    """The Prometheus name of an OpenTelemetry metric: ``switchboard.request.duration`` in ``s``
    becomes ``switchboard_request_duration_seconds``; counters end in ``_total``."""
    base = _INVALID_NAME_CHARS.sub("_", name).strip("_")
    suffix = _unit_suffix(unit)
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    if counter and not base.endswith("_total"):
        base = f"{base}_total"
    return base


def _unit_suffix(unit: str) -> str:
    unit = re.sub(r"\{[^}]*\}", "", unit)  # `{token}` is an annotation, not a unit
    if not unit:
        return ""
    if unit in _UNIT_WORDS:
        return _UNIT_WORDS[unit]
    per, slash, denominator = unit.partition("/")
    if slash:
        left = _UNIT_WORDS.get(per, per)
        return _INVALID_LABEL_CHARS.sub("_", f"{left}_per_{denominator}").strip("_")
    return _INVALID_LABEL_CHARS.sub("_", unit).strip("_")


def _render_metric(metric: Metric, lines: list[str]) -> None:
    data = metric.data
    unit = metric.unit or ""
    if isinstance(data, Sum):
        kind = "counter" if data.is_monotonic else "gauge"
        name = prometheus_name(metric.name, unit, counter=data.is_monotonic)
    elif isinstance(data, Gauge):
        kind = "gauge"
        name = prometheus_name(metric.name, unit)
    elif isinstance(data, HistogramData):
        kind = "histogram"
        name = prometheus_name(metric.name, unit)
    else:
        return  # exponential histograms: none of ours
    lines.append(f"# HELP {name} {_escape_help(metric.description or metric.name)}")
    lines.append(f"# TYPE {name} {kind}")
    if isinstance(data, HistogramData):
        for point in data.data_points:
            attrs = _label_pairs(point.attributes)
            cumulative = 0
            for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                cumulative += count
                le = _labels(attrs, ("le", _number(float(bound))))
                lines.append(f"{name}_bucket{le} {cumulative}")
            lines.append(f"{name}_bucket{_labels(attrs, ('le', '+Inf'))} {point.count}")
            labels = _labels(attrs)
            lines.append(f"{name}_sum{labels} {_number(point.sum)}")
            lines.append(f"{name}_count{labels} {point.count}")
        return
    for number_point in data.data_points:
        labels = _labels(_label_pairs(number_point.attributes))
        lines.append(f"{name}{labels} {_number(number_point.value)}")


def _label_pairs(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """Prometheus label names and values; empty values are left out (Prometheus reads an empty
    label as an absent one)."""
    if not attributes:
        return {}
    pairs: dict[str, str] = {}
    for key, value in sorted(attributes.items()):
        label = _INVALID_LABEL_CHARS.sub("_", key)
        if label[:1].isdigit():
            label = f"_{label}"
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        elif isinstance(value, Sequence):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        if text:
            pairs[label] = text
    return pairs


def _labels(pairs: Mapping[str, str], *extra: tuple[str, str]) -> str:
    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in (*pairs.items(), *extra))
    return f"{{{body}}}" if body else ""


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _failures(attempts: Sequence[str]) -> list[str]:
    """The tier failures among ``attempts`` (not a small answer the cascade discarded)."""
    return [a for a in attempts if DISCARDED not in a]
