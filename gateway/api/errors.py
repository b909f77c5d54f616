"""The one error mapper: every failure leaves the gateway as an OpenAI error body."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from gateway.pipeline.headers import header_safe

log = logging.getLogger("gateway.api")

_encode = msgspec.json.Encoder().encode

REQUEST_ID = "x-switchboard-request-id"

AnyRequest = Request[Any, Any, Any]


def wire_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Response header values made safe for the wire: one line, ASCII, bounded.

    Some values come from outside the gateway (an upstream's model name, a cached entry's): a
    CR/LF in one would make the HTTP server drop the connection instead of answering (h11 refuses
    such a header after the app has started its response), and could split headers elsewhere."""
    return {name: header_safe(value) for name, value in headers.items()}


def error_response(
    error: GatewayError, request_id: str, headers: Mapping[str, str] | None = None
) -> Response[bytes]:
    return Response(
        content=_encode(error.body()),
        status_code=error.status,
        media_type="application/json",
        headers=wire_headers({**(headers or {}), **error.headers, REQUEST_ID: request_id}),
    )


def _from_http_exception(exc: HTTPException) -> GatewayError:
    """Litestar's own errors (unknown route, wrong method, size limit) in our terms."""
    status = exc.status_code
    detail = str(exc.detail)
    if status == 413:
        return PayloadTooLarge(f"Request body too large: {detail}.")
    if status == 404:
        return ModelNotFound(f"Unknown URL: {detail}.", code="unknown_url")
    if status == 401:
        return AuthenticationFailed(detail)
    if status == 403:
        return PermissionDenied(detail)
    if 400 <= status < 500:
        error = InvalidRequest(detail, code=None)
        error.status = status
        return error
    return GatewayError(detail)


def http_exception_handler(request: AnyRequest, exc: HTTPException) -> Response[bytes]:
    error = _from_http_exception(exc)
    return error_response(error, uuid.uuid4().hex, exc.headers)


def gateway_error_handler(request: AnyRequest, exc: GatewayError) -> Response[bytes]:
    return error_response(exc, uuid.uuid4().hex)


def unexpected_error_handler(request: AnyRequest, exc: Exception) -> Response[bytes]:
    request_id = uuid.uuid4().hex
    log.exception(
        "unhandled error on %s %s (request id %s)", request.method, request.url.path, request_id
    )
    return error_response(GatewayError(f"Internal error (request id {request_id})."), request_id)
