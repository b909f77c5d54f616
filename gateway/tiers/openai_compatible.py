"""The hosted tier's fast path: any OpenAI-compatible server through one pooled aiohttp session.

aiohttp, not httpx or litellm, because it measured 7x the throughput under load here (see
DESIGN.md). Every aiohttp exception and upstream status is mapped to ``gateway.errors`` in
``_upstream_errors`` and ``_raise_for_status``, and nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import msgspec

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.tiers.base import Completion, Json, TokenLogprob
from gateway.usage import Usage

log = logging.getLogger("gateway.tiers")

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class OpenAICompatibleTier:
    """One tier served by an OpenAI-compatible upstream (OpenAI, vLLM, Ollama, DeepSeek, ...)."""

    def __init__(
        self,
        *,
        name: str,
        model: str,
        upstream_name: str,
        base_url: str,
        api_key_env: str | None,
        api_key: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.upstream_name = upstream_name
        self._base_url = base_url.rstrip("/")
        self._url = self._base_url + "/chat/completions"
        self._api_key_env = api_key_env
        self._headers = {"content-type": "application/json", **(extra_headers or {})}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session belongs to the event loop it was made on.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",)
            )
        return self._session

    def _request_headers(self) -> dict[str, str]:
        if self._api_key_env is not None and "authorization" not in self._headers:
            raise UpstreamError(
                f"the {self.name} tier's upstream {self.upstream_name!r} needs an API key: "
                f"set the environment variable {self._api_key_env} and restart the gateway",
                code="upstream_not_configured",
                headers={"x-should-retry": "false"},
            )
        return self._headers

    async def post_json(self, path: str, payload: Json) -> Json:
        """POST ``payload`` to ``{base_url}{path}`` and return the JSON object answered."""
        headers = self._request_headers()
        url = self._url if path == "/chat/completions" else self._base_url + path
        with self._upstream_errors():
            async with self._session_for_loop().post(
                url, data=_encode(payload), headers=headers
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._error_for_status(resp.status, raw, resp.headers)
        body = self._decode_json(raw)
        if not isinstance(body, dict):
            raise UpstreamError(f"upstream {self.upstream_name!r} answered with a non-object")
        return body

    async def complete(self, payload: Json) -> Completion:
        body = await self.post_json("/chat/completions", payload)
        normalise_completion(body, self.model)
        return Completion(
            body=body,
            model=str(body.get("model") or self.model),
            usage=usage_from(body.get("usage")),
            logprobs=_logprobs_of(body),
        )

    async def stream(self, payload: Json) -> _AiohttpStream:
        headers = self._request_headers()
        with self._upstream_errors():
            resp = await self._session_for_loop().post(
                self._url, data=_encode(payload), headers={**headers, "accept": "text/event-stream"}
            )
            if resp.status >= 400:
                try:
                    raw = await resp.read()
                finally:
                    resp.release()
                raise self._error_for_status(resp.status, raw, resp.headers)
        return _AiohttpStream(resp, self)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextmanager
    def _upstream_errors(self) -> Iterator[None]:
        """The one place aiohttp's exceptions become ours."""
        who = f"the {self.name} tier's upstream {self.upstream_name!r}"
        try:
            yield
        except GatewayError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"{who} did not answer in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(f"{who} refused the connection ({exc.os_error})") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamError(f"{who} closed the connection early") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{who} failed: {type(exc).__name__}") from exc

    def _decode_json(self, raw: bytes) -> Any:
        try:
            return _decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:  # nested too deep: also malformed
            raise UpstreamError(
                f"upstream {self.upstream_name!r} sent malformed JSON", code="upstream_bad_response"
            ) from exc

    def _error_for_status(
        self, status: int, raw: bytes, headers: Mapping[str, str]
    ) -> GatewayError:
        detail = _error_message(raw)
        who = f"upstream {self.upstream_name!r} (model {self.model!r})"
        if status == 429:
            retry = _retry_after(headers)
            return RateLimited(f"{who} is rate limiting: {detail}", retry_after_s=retry)
        if status in (401, 403):
            env = self._api_key_env or "the upstream's api_key_env"
            return UpstreamError(
                f"{who} rejected the gateway's credentials ({status}); check {env}",
                code="upstream_auth_failed",
                # Retrying cannot fix a wrong provider key; openai-python would try twice more.
                headers={"x-should-retry": "false"},
            )
        if status in (400, 413, 422):
            # The request itself was refused (context too long, bad parameter): the client's to fix.
            return InvalidRequest(f"{who} rejected the request: {detail}")
        if status == 404:
            return UpstreamError(f"{who} does not know the model ({detail})", code="upstream_404")
        if status in (502, 503):
            return UpstreamUnavailable(
                f"{who} is unavailable ({status}): {detail}", retry_after_s=_retry_after(headers)
            )
        if status == 504:
            return UpstreamTimeout(f"{who} timed out (504): {detail}")
        return UpstreamError(f"{who} failed with status {status}: {detail}")


class _AiohttpStream:
    """Decodes an upstream SSE response into chunk dicts; records usage and log-probabilities."""

    def __init__(self, resp: aiohttp.ClientResponse, tier: OpenAICompatibleTier) -> None:
        self._resp = resp
        self._tier = tier
        self.model = tier.model
        self.usage: Usage | None = None
        self.logprobs: list[TokenLogprob] = []

    def __aiter__(self) -> AsyncIterator[Json]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Json]:
        tier = self._tier
        done = False
        try:
            with tier._upstream_errors():
                async for line in self._resp.content:
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments (keep-alives), event: lines
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    chunk = tier._decode_json(data)
                    if not isinstance(chunk, dict):
                        raise UpstreamError(
                            f"upstream {tier.upstream_name!r} sent a malformed stream event",
                            code="upstream_bad_response",
                        )
                    if "error" in chunk and "choices" not in chunk:
                        raise UpstreamError(
                            f"upstream {tier.upstream_name!r} failed mid-stream: "
                            f"{_error_message(_encode(chunk))}"
                        )
                    if chunk.get("model"):
                        self.model = str(chunk["model"])
                    if (usage := usage_from(chunk.get("usage"))) is not None:
                        self.usage = usage
                    self.logprobs.extend(_chunk_logprobs(chunk))
                    yield chunk
            if not done:
                raise UpstreamError(
                    f"upstream {tier.upstream_name!r} ended the stream without [DONE]",
                    code="upstream_stream_cut",
                )
        finally:
            self._resp.release()

    async def aclose(self) -> None:
        self._resp.close()


def normalise_completion(body: Json, model: str) -> None:
    """Fill what the OpenAI spec requires and some upstreams omit (refusal, logprobs, index)."""
    body.setdefault("id", "chatcmpl-upstream")
    body["object"] = "chat.completion"
    if not isinstance(body.get("created"), int):
        body["created"] = int(time.time())
    body.setdefault("model", model)
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise UpstreamError("upstream answer has no `choices` list", code="upstream_bad_response")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise UpstreamError(
                "upstream answer has a malformed choice", code="upstream_bad_response"
            )
        choice.setdefault("index", i)
        message = choice.get("message")
        if not isinstance(message, dict):
            message = choice["message"] = {}
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        message.setdefault("refusal", None)
        choice.setdefault("logprobs", None)
        if choice.get("finish_reason") is None:
            choice["finish_reason"] = "stop"


def usage_from(raw: object) -> Usage | None:
    """Usage from an OpenAI ``usage`` object; None when absent or unusable."""
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=cached if isinstance(cached, int) else 0,
    )


def _logprobs_of(body: Json) -> list[TokenLogprob] | None:
    choices = body.get("choices") or []
    if not choices:
        return None
    content = (choices[0].get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        return None
    return [
        TokenLogprob(str(item.get("token", "")), float(item.get("logprob", 0.0)))
        for item in content
        if isinstance(item, dict)
    ]


def _chunk_logprobs(chunk: Json) -> list[TokenLogprob]:
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list):
        return []
    first = choices[0]
    if not isinstance(first, dict) or first.get("index", 0) != 0:
        return []
    content = (first.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        return []
    return [
        TokenLogprob(str(item.get("token", "")), float(item.get("logprob", 0.0)))
        for item in content
        if isinstance(item, dict)
    ]


def _error_message(raw: bytes) -> str:
    try:
        body = _decode(raw)
    except (msgspec.DecodeError, RecursionError):
        text = raw[:200].decode("utf-8", "replace").strip()
        return text or "no details"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    return "no details"


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value else 1.0
    except ValueError:
        return 1.0
