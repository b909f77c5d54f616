"""GET /metrics: the gateway's metrics in Prometheus' text format (``gateway.telemetry``)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import MediaType, Request, Response, get

from gateway.api.errors import error_response
from gateway.errors import ModelNotFound
from gateway.telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry, render_prometheus

AnyRequest = Request[Any, Any, Any]


@get("/metrics", include_in_schema=False)
async def metrics(request: AnyRequest) -> Response[bytes]:
    """Prometheus scrape endpoint; 404 (OpenAI error body) when telemetry or Prometheus is off."""
    telemetry = getattr(request.app.state.switchboard, "telemetry", None)
    if not isinstance(telemetry, Telemetry) or not telemetry.prometheus:
        error = ModelNotFound(
            "Metrics are off on this gateway: set `telemetry.prometheus: true` in the config "
            "to serve GET /metrics.",
            code="unknown_url",
        )
        return error_response(error, uuid.uuid4().hex)
    return Response(
        content=render_prometheus(telemetry).encode(),
        media_type=MediaType.TEXT,
        # As a header: Litestar would append a second charset to a `text/` media type.
        headers={"content-type": PROMETHEUS_CONTENT_TYPE},
    )
