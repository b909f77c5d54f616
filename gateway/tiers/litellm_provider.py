"""Providers that do not speak OpenAI's API (Anthropic, Bedrock, Vertex, Gemini, ...) via litellm.

litellm translates the request and the answer; it is not the hot path (about 4 ms of CPU per call,
see DESIGN.md), and importing it takes seconds, so it is imported lazily, in a worker thread, the
first time a litellm tier is called, and offline (``LITELLM_LOCAL_MODEL_COST_MAP``, tiktoken's
encodings from litellm's own folder).

Every exception litellm raises becomes a gateway error in :func:`map_litellm_error` and nowhere
else. :data:`MAPPED_EXCEPTIONS` names each class of ``litellm.exceptions`` explicitly; a test fails
when an upgraded litellm exports one that is not listed. At run time an unlisted subclass is mapped
as its nearest listed base, and anything else is a generic ``UpstreamError`` (logged)::

    litellm.exceptions                                    gateway.errors
    AuthenticationError, PermissionDeniedError, ...       UpstreamError 502  (check api_key_env)
    BadRequestError, ContextWindowExceededError,
      ContentPolicyViolationError, UnsupportedParams...,
      UnprocessableEntityError, guardrail refusals        InvalidRequest 400
    NotFoundError                                         UpstreamError 502  (unknown model)
    RateLimitError                                        RateLimited 429    (retry-after)
    Timeout                                               UpstreamTimeout 504
    APIConnectionError, ServiceUnavailableError           UpstreamUnavailable 503
    InternalServerError, BadGatewayError, APIError        UpstreamError 502, or 503/504 when the
                                                          provider said overloaded / timed out
    unknown providers, endpoints, budgets, proxy-only     UpstreamError 502  (the gateway's config)
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType, ModuleType
from typing import Any, Final

import httpx

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.tiers.base import Completion, Json, TokenLogprob
from gateway.tiers.openai_compatible import normalise_completion, usage_from
from gateway.tokens import configure_offline_tiktoken
from gateway.usage import Usage

__all__ = ["MAPPED_EXCEPTIONS", "LitellmTier", "load_litellm", "map_litellm_error"]

log = logging.getLogger("gateway.tiers")

# OpenAI chat parameters litellm translates for each provider; with drop_params=True it drops those
# a provider lacks instead of raising. Anything else a client sends stays here: litellm would pass
# unknown keywords to the provider as provider-specific fields, and the provider would refuse them.
# `metadata` is left out on purpose: litellm's keyword of that name is its own logging metadata.
FORWARDED_PARAMS: Final = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "web_search_options",
    }
)

# Keys litellm adds to messages, deltas and bodies that are not OpenAI's.
_LITELLM_ONLY_KEYS: Final = frozenset({"provider_specific_fields", "citations", "thinking_blocks"})
# Fields OpenAI sends as null; every other null litellm fills in is dropped (the spec's types for
# `tool_calls`, `function_call`, `audio`, `system_fingerprint` ... are not nullable).
_NULLABLE_KEYS: Final = frozenset({"content", "refusal", "logprobs", "finish_reason"})


# --- lazy import -------------------------------------------------------------------------------

_import_lock = threading.Lock()
_litellm: ModuleType | None = None


def load_litellm() -> ModuleType:
    """Import litellm once, offline and quiet; blocking (seconds), so call it from a thread.

    Concurrent first calls import once: the others wait on the lock and get the same module.
    """
    global _litellm
    with _import_lock:
        if _litellm is None:
            # Else litellm fetches its price map from GitHub, with retries, at import time.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            configure_offline_tiktoken()
            module: Any = importlib.import_module("litellm")
            module.telemetry = False  # gone in recent releases; older ones phone home without it
            module.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on errors
            if "LITELLM_LOG" not in os.environ:
                # litellm's loggers carry their own stderr handler; keep them to real problems.
                for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                    logging.getLogger(name).setLevel(logging.WARNING)
            _litellm = module
        return _litellm


async def _litellm_module() -> ModuleType:
    if _litellm is not None:
        return _litellm
    return await asyncio.to_thread(load_litellm)


# --- the tier ----------------------------------------------------------------------------------

_open_tiers = 0  # litellm's HTTP clients are process-wide: the last tier to close releases them


class LitellmTier:
    """One tier served by ``litellm.acompletion``; models are litellm's ``provider/name``."""

    def __init__(
        self,
        *,
        name: str,
        model: str,
        api_key: str | None,
        api_base: str | None,
        timeout_s: float,
    ) -> None:
        global _open_tiers
        self.name = name
        self.model = model
        self._api_key = api_key
        self._api_base = api_base
        self._timeout_s = timeout_s
        self._closed = False
        _open_tiers += 1

    def _arguments(self, payload: Json, *, stream: bool) -> dict[str, Any]:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("`messages` must be a non-empty list", param="messages")
        kwargs: dict[str, Any] = {
            key: value
            for key, value in payload.items()
            if key in FORWARDED_PARAMS and value is not None
        }
        kwargs.update(
            model=self.model,
            messages=messages,
            timeout=self._timeout_s,
            stream=stream,
            drop_params=True,
            # The pipeline falls back to other tiers; retries inside litellm would only add delay.
            max_retries=0,
        )
        if stream:
            kwargs["stream_options"] = {"include_usage": True}  # what the ledger bills by
        # Without a key litellm reads the provider's own variables (AWS_*, GOOGLE_*, ...).
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        if self._api_base is not None:
            kwargs["api_base"] = self._api_base
        return kwargs

    async def complete(self, payload: Json) -> Completion:
        kwargs = self._arguments(payload, stream=False)
        litellm = await _litellm_module()
        with self._litellm_errors():
            response = await litellm.acompletion(**kwargs)
        body = _plain(response)
        _clean_body(body)
        normalise_completion(body, self.model)
        return Completion(
            body=body,
            model=str(body.get("model") or self.model),
            usage=usage_from(body.get("usage")),
            logprobs=_logprobs_of(body),
        )

    async def stream(self, payload: Json) -> _LitellmStream:
        kwargs = self._arguments(payload, stream=True)
        litellm = await _litellm_module()
        with self._litellm_errors():
            # litellm sends the request here, so refusals and timeouts raise before any chunk.
            wrapper = await litellm.acompletion(**kwargs)
        return _LitellmStream(wrapper, self)

    async def aclose(self) -> None:
        global _open_tiers
        if self._closed:
            return
        self._closed = True
        _open_tiers -= 1
        if _open_tiers == 0 and _litellm is not None:
            await _release_litellm_clients(_litellm)

    @contextmanager
    def _litellm_errors(self) -> Iterator[None]:
        try:
            yield
        except GatewayError:
            raise
        except Exception as exc:
            raise map_litellm_error(exc, tier=self.name, model=self.model) from exc


async def _release_litellm_clients(litellm: ModuleType) -> None:
    closer = getattr(litellm, "close_litellm_async_clients", None)
    if closer is not None:
        await closer()
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    if cache is not None:
        cache.flush_cache()  # closed clients must not be handed to the next call


class _LitellmStream:
    """litellm's ``CustomStreamWrapper`` as OpenAI chunk dicts; records usage and logprobs."""

    def __init__(self, wrapper: Any, tier: LitellmTier) -> None:
        self._wrapper = wrapper
        self._tier = tier
        self.model = tier.model
        self.usage: Usage | None = None
        self.logprobs: list[TokenLogprob] = []

    def __aiter__(self) -> AsyncIterator[Json]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Json]:
        tier = self._tier
        first = True
        try:
            with tier._litellm_errors():
                async for item in self._wrapper:
                    chunk = _plain(item)
                    _clean_chunk(chunk, tier.model, first=first)
                    if chunk["choices"]:
                        first = False
                    if chunk.get("model"):
                        self.model = str(chunk["model"])
                    if (usage := usage_from(chunk.get("usage"))) is not None:
                        self.usage = usage
                    self.logprobs.extend(_chunk_logprobs(chunk))
                    yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        # Releases the provider's HTTP response; litellm logs and swallows failures to close.
        closer = getattr(self._wrapper, "aclose", None)
        if closer is not None:
            await closer()


# --- shapes ------------------------------------------------------------------------------------


def _plain(response: Any) -> Json:
    """litellm's pydantic response (or a dict, as some paths return) as a plain dict."""
    if isinstance(response, dict):
        return response
    dump = getattr(response, "model_dump", None)
    body = dump() if dump is not None else json.loads(response.json())
    if not isinstance(body, dict):
        raise UpstreamError("litellm returned a non-object answer", code="upstream_bad_response")
    return body


def _drop_extras(obj: Json) -> None:
    for key in [k for k, v in obj.items() if k in _LITELLM_ONLY_KEYS or v is None]:
        if key in _LITELLM_ONLY_KEYS or key not in _NULLABLE_KEYS:
            del obj[key]


def _clean_usage(usage: object) -> None:
    if not isinstance(usage, dict):
        return
    for key in [k for k, v in usage.items() if v is None]:
        del usage[key]
    for details in ("prompt_tokens_details", "completion_tokens_details"):
        inner = usage.get(details)
        if isinstance(inner, dict):
            for key in [k for k, v in inner.items() if v is None]:
                del inner[key]


def _clean_body(body: Json) -> None:
    _drop_extras(body)
    _clean_usage(body.get("usage"))
    for choice in body.get("choices") or []:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            _drop_extras(choice["message"])


def _clean_chunk(chunk: Json, model: str, *, first: bool) -> None:
    """Fill what OpenAI's chunk schema requires; ``role`` goes in the first delta."""
    _drop_extras(chunk)
    chunk.setdefault("id", "chatcmpl-upstream")
    chunk["object"] = "chat.completion.chunk"
    if not isinstance(chunk.get("created"), int):
        chunk["created"] = int(time.time())
    chunk.setdefault("model", model)
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        choices = chunk["choices"] = []
    _clean_usage(chunk.get("usage"))
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise UpstreamError(
                "litellm sent a malformed stream chunk", code="upstream_bad_response"
            )
        choice.setdefault("index", i)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice["delta"] = {}
        _drop_extras(delta)
        if first:
            delta.setdefault("role", "assistant")
        choice.setdefault("finish_reason", None)
        choice.setdefault("logprobs", None)


def _token_logprobs(logprobs: object) -> list[TokenLogprob] | None:
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    return [
        TokenLogprob(str(item.get("token", "")), float(item.get("logprob", 0.0)))
        for item in content
        if isinstance(item, dict)
    ]


def _logprobs_of(body: Json) -> list[TokenLogprob] | None:
    choices = body.get("choices") or []
    return _token_logprobs(choices[0].get("logprobs")) if choices else None


def _chunk_logprobs(chunk: Json) -> list[TokenLogprob]:
    for choice in chunk["choices"]:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return _token_logprobs(choice.get("logprobs")) or []
    return []


# --- the one place litellm's exceptions become ours ---------------------------------------------

_Mapper = Callable[[Any, str], GatewayError]  # (litellm exception, "who failed") -> our error


def _credentials(exc: Any, who: str) -> GatewayError:
    status = getattr(exc, "status_code", None)
    return UpstreamError(
        f"{who} rejected the gateway's API key ({status}: {_detail(exc)}); "
        "check the upstream's api_key_env",
        code="upstream_auth_failed",
        # Retrying cannot fix a wrong provider key; openai-python would try twice more.
        headers={"x-should-retry": "false"},
    )


def _invalid(code: str | None = None) -> _Mapper:
    def mapper(exc: Any, who: str) -> GatewayError:
        # The request itself was refused (context too long, a parameter): the client's to fix.
        return InvalidRequest(f"{who} rejected the request: {_detail(exc)}", code=code)

    return mapper


def _guardrail(exc: Any, who: str) -> GatewayError:
    return InvalidRequest(f"a litellm guardrail refused the request: {_detail(exc)}")


def _not_found(exc: Any, who: str) -> GatewayError:
    return UpstreamError(f"{who} does not know the model ({_detail(exc)})", code="upstream_404")


def _rate_limited(exc: Any, who: str) -> GatewayError:
    return RateLimited(f"{who} is rate limiting: {_detail(exc)}", retry_after_s=_retry_after(exc))


def _timeout(exc: Any, who: str) -> GatewayError:
    return UpstreamTimeout(f"{who} did not answer in time: {_detail(exc)}")


def _unavailable(exc: Any, who: str) -> GatewayError:
    return UpstreamUnavailable(
        f"{who} is unavailable: {_detail(exc)}", retry_after_s=_retry_after(exc)
    )


def _server_failure(exc: Any, who: str) -> GatewayError:
    """The provider failed; litellm folds connect errors and overloads into 500s, so look closer."""
    status = _provider_status(exc)
    if status == 429:
        return _rate_limited(exc, who)
    if status in (503, 529) or _caused_by(exc, httpx.ConnectError):
        return _unavailable(exc, who)
    if status == 504 or _caused_by(exc, httpx.TimeoutException):
        return _timeout(exc, who)
    shown = f" ({status})" if status is not None else ""
    return UpstreamError(f"{who} failed{shown}: {_detail(exc)}")


def _bad_response(exc: Any, who: str) -> GatewayError:
    return UpstreamError(
        f"{who} sent an answer litellm could not read: {_detail(exc)}",
        code="upstream_bad_response",
    )


def _stream_cut(exc: Any, who: str) -> GatewayError:
    return UpstreamError(f"{who} failed mid-stream: {_detail(exc)}", code="upstream_stream_cut")


def _gateway_side(reason: str) -> _Mapper:
    """Failures only the gateway's operator can fix: the config, the provider account, a budget."""

    def mapper(exc: Any, who: str) -> GatewayError:
        return UpstreamError(
            f"{who} cannot be used: {reason} ({_detail(exc)})",
            code="upstream_misconfigured",
            headers={"x-should-retry": "false"},
        )

    return mapper


MAPPED_EXCEPTIONS: Final[Mapping[str, _Mapper]] = MappingProxyType(
    {
        # The provider refused the gateway's credentials.
        "AuthenticationError": _credentials,
        "CallerCredentialAuthenticationError": _credentials,
        "PermissionDeniedError": _credentials,
        # The request: the client's to fix.
        "BadRequestError": _invalid(),
        "InvalidRequestError": _invalid(),
        "ContextWindowExceededError": _invalid("context_length_exceeded"),
        "ContentPolicyViolationError": _invalid("content_policy_violation"),
        "UnsupportedParamsError": _invalid("unsupported_parameter"),
        "UnprocessableEntityError": _invalid(),
        "MalformedRequestFieldError": _invalid(),
        "ImageFetchError": _invalid("invalid_image_url"),
        "RejectedRequestError": _guardrail,
        "GuardrailRaisedException": _guardrail,
        "BlockedPiiEntityError": _guardrail,
        # The provider does not know the configured model.
        "NotFoundError": _not_found,
        # Load.
        "RateLimitError": _rate_limited,
        "CallerCredentialRateLimitError": _rate_limited,
        "Timeout": _timeout,
        "APIConnectionError": _unavailable,
        "ServiceUnavailableError": _unavailable,
        # The provider failed.
        "InternalServerError": _server_failure,
        "BadGatewayError": _server_failure,
        "APIError": _server_failure,
        "MockException": _server_failure,
        "OpenAIError": _server_failure,
        "MidStreamFallbackError": _stream_cut,
        "APIResponseValidationError": _bad_response,
        "JSONSchemaValidationError": _bad_response,
        # The gateway's side: config, provider account, litellm features we do not use.
        "LiteLLMUnknownProvider": _gateway_side("litellm does not know the model's provider"),
        "EndpointNotSupportedByModelError": _gateway_side("the model cannot chat"),
        "UnsupportedEndpointError": _gateway_side("the provider has no chat endpoint"),
        "ModelNotMappedError": _gateway_side("litellm has no entry for the model"),
        "PaymentRequiredError": _gateway_side("the provider account needs payment"),
        "BudgetExceededError": _gateway_side("litellm's own max_budget is spent"),
        "VectorStoreSearchError": _gateway_side("a litellm vector store search failed"),
        "ModifyResponseException": _gateway_side("a litellm proxy guardrail replied"),
        "SensitiveDataRouteException": _gateway_side("a litellm proxy guardrail rerouted"),
    }
)


def map_litellm_error(exc: BaseException, *, tier: str, model: str) -> GatewayError:
    """The gateway error for an exception raised by litellm (raise it ``from exc``).

    The most specific class litellm defines in ``exc``'s MRO that :data:`MAPPED_EXCEPTIONS` names
    decides; an exception litellm let through unwrapped (httpx, asyncio) is mapped by kind.
    """
    if isinstance(exc, GatewayError):
        return exc
    who = f"the {tier} tier's provider (model {model!r})"
    for cls in type(exc).__mro__:
        if cls.__module__.partition(".")[0] == "litellm" and cls.__name__ in MAPPED_EXCEPTIONS:
            return MAPPED_EXCEPTIONS[cls.__name__](exc, who)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return _timeout(exc, who)
    if isinstance(exc, httpx.ConnectError):
        return _unavailable(exc, who)
    log.warning("unmapped exception from litellm in the %s tier (%s)", tier, model, exc_info=exc)
    return UpstreamError(f"{who} failed: {type(exc).__name__}")


_DETAIL_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)+")
_HANDLE_WITH = re.compile(r"\.?\s*Handle with `litellm\.\w+`\.?\s*$")


def _detail(exc: Any) -> str:
    """litellm's message without its class prefixes; the provider's own message when it is JSON."""
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) and message else str(exc)
    text = _HANDLE_WITH.sub("", _DETAIL_PREFIX.sub("", text)).strip()
    start = text.find("{")
    if start != -1:
        try:
            body = json.loads(text[start:])
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        inner = error.get("message") if isinstance(error, dict) else None
        if isinstance(inner, str) and inner:
            text = inner
    return text[:500] or type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(link, kind) for link in _chain(exc))


def _provider_status(exc: BaseException) -> int | None:
    """The provider's own status: litellm reports many as 500 and keeps the real one aside."""
    status = getattr(exc, "provider_status_code", None)
    if isinstance(status, int):
        return status
    for link in _chain(exc):
        if isinstance(link, httpx.HTTPStatusError):
            return link.response.status_code
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _retry_after(exc: BaseException) -> float:
    for source in ("litellm_response_headers", "headers", "response"):
        headers = getattr(exc, source, None)
        if source == "response":
            headers = getattr(headers, "headers", None)
        if not isinstance(headers, Mapping):  # httpx.Headers is one
            continue
        try:
            if (ms := headers.get("retry-after-ms")) is not None:
                return float(ms) / 1000
            if (seconds := headers.get("retry-after")) is not None:
                return float(seconds)
        except (TypeError, ValueError):
            continue
    return 1.0
