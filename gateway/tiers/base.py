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

    model: str
    usage: Usage | None
    logprobs: list[TokenLogprob]

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
