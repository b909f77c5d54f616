"""Token usage of one model call, as the upstream reported it or as we counted it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Prompt tokens the provider served from its own prompt cache (billed at a lower price).
    cached_prompt_tokens: int = 0
    # True when we counted with tiktoken because the upstream sent no usage (or the client left).
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
