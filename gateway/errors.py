"""The gateway's error tree: every failure a client can see, with its HTTP status and OpenAI shape.

    GatewayError                      500 server_error
    ├── InternalError                 500 server_error           (unforeseen; details in the log)
    ├── InvalidRequest                400 invalid_request_error
    ├── AuthenticationFailed          401 authentication_error   (code invalid_api_key)
    ├── PermissionDenied              403 permission_error
    ├── ModelNotFound                 404 invalid_request_error  (code model_not_found)
    ├── PayloadTooLarge               413 invalid_request_error  (code request_too_large)
    ├── RateLimited                   429 rate_limit_error       (retry-after)
    ├── BudgetExceeded                429 insufficient_quota     (x-should-retry: false)
    ├── BudgetUnavailable             503 server_error           (budget store down; retry-after)
    └── UpstreamError                 502 upstream_error         (the provider failed)
        ├── UpstreamUnavailable       503 upstream_unavailable   (refused / full; retry-after)
        └── UpstreamTimeout           504 upstream_timeout

One handler in ``gateway.api.errors`` turns these into OpenAI error bodies (and into a final SSE
error event once a stream has begun). Anything else that escapes is a generic 500 with the request
id; its details go to the log only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InternalError(GatewayError):
    """Something we did not foresee; the client sees only this and the request id."""


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("retry-after", str(max(1, round(retry_after_s))))


class BudgetExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, **kwargs: object
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        # A retry cannot help before the period resets; tell openai-python not to try.
        self.headers["x-should-retry"] = "false"
        if retry_after_s is not None:
            self.headers["retry-after"] = str(max(1, round(retry_after_s)))


class BudgetUnavailable(GatewayError):
    """The budget store cannot be reached and the tenant's limits fail closed."""

    status = 503
    type = "server_error"
    code = "budget_store_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("retry-after", str(max(1, math.ceil(retry_after_s))))


class LedgerUnavailable(GatewayError):
    """The spend ledger cannot commit (data directory full or read-only, file locked): no
    request is served that could not be recorded."""

    status = 503
    type = "server_error"
    code = "ledger_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("retry-after", str(max(1, math.ceil(retry_after_s))))


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status = 503
    type = "upstream_error"
    code = "upstream_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("retry-after", str(max(1, round(retry_after_s))))


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"
