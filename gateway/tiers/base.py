"""The one small protocol every tier speaks (cache, local model, hosted model).

A tier takes an OpenAI chat payload (already aimed at its own model) and returns either a complete
answer or a stream of chunks, both in OpenAI's wire shape as plain dicts, plus the usage and token
log-probabilities when the model gives them. Errors are ``gateway.errors`` classes: a tier maps its
own client's exceptions in one place, so the pipeline never sees aiohttp or litellm errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.usage import Usage

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float


@dataclass(slots=True)
class Completion:
    """A whole answer: the response body in OpenAI's shape, normalised by the tier."""

    body: Json
    model: str
    usage: Usage | None
    logprobs: list[TokenLogprob] | None = None

    @property
    def text(self) -> str:
        """The first choice's text (what the pipeline counts when the upstream sent no usage)."""
        choices = self.body.get("choices") or []
        if not choices:
            return ""
        content = (choices[0].get("message") or {}).get("content")
        return content if isinstance(content, str) else ""


class CompletionStream(Protocol):
    """Chunks of a streamed answer (``chat.completion.chunk`` dicts), as the upstream sent them.

    ``usage`` is filled once the upstream's usage chunk has passed (tiers always ask for it).
    Iteration raises ``UpstreamError`` subclasses when the upstream fails mid-stream.
    """

    @property
    def model(self) -> str: ...

    @property
    def usage(self) -> Usage | None: ...

    @property
    def logprobs(self) -> list[TokenLogprob]: ...

    def __aiter__(self) -> AsyncIterator[Json]: ...

    async def aclose(self) -> None: ...


class Tier(Protocol):
    """A place that can answer a chat request."""

    name: str
    model: str

    async def complete(self, payload: Json) -> Completion:
        """Answer without streaming; raises a ``GatewayError`` on failure."""
        ...

    async def stream(self, payload: Json) -> CompletionStream:
        """Start a stream. Fails here, before any chunk, when the upstream refuses or times out."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


class _Prefetched:
    """A stream whose first chunk was already read, so its failure could still fall back."""

    def __init__(self, stream: CompletionStream, rest: AsyncIterator[Json], first: Json) -> None:
        self._stream = stream
        self._rest = rest
        self._first: Json | None = first
        self.model = stream.model

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def logprobs(self) -> list[TokenLogprob]:
        return self._stream.logprobs

    def __aiter__(self) -> AsyncIterator[Json]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Json]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for chunk in self._rest:
            self.model = self._stream.model
            yield chunk

    async def aclose(self) -> None:
        closer = getattr(self._rest, "aclose", None)
        if closer is not None:
            await closer()
        await self._stream.aclose()


async def start_stream(tier: Tier, payload: Json) -> CompletionStream:
    """Open a stream and read its first chunk.

    Every failure before the first byte the client would see is raised here, where the pipeline
    can still answer with a real status or fall back to another tier.
    """
    from gateway.errors import UpstreamError

    stream = await tier.stream(payload)
    rest = stream.__aiter__()
    try:
        first = await rest.__anext__()
    except StopAsyncIteration:
        await stream.aclose()
        raise UpstreamError(
            f"the {tier.name} tier's stream ended before its first chunk",
            code="upstream_bad_response",
        ) from None
    except BaseException:
        await stream.aclose()
        raise
    return _Prefetched(stream, rest, first)
