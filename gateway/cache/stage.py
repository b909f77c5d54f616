"""The exact-cache stage: answers repeated requests from the store, stores fresh answers.

Placed after ``route`` and ``settle`` and before ``tier``: the routing decision has been made (so
the tenant was allowed this model, and ``settle`` prices a hit at 0 against the baseline), and a
hit stops the pipeline before any tier or budget reservation. On the way out it stores what a tier
answered, if the request may be cached and the answer finished cleanly.

Request header ``x-switchboard-cache`` (comma-separated, like ``Cache-Control``):
``no-cache``: do not answer from the cache (the fresh answer may still be stored);
``no-store``: do not store this answer (a stored one may still be served). Both: bypass.

Response headers: ``x-switchboard-cache: hit | miss | bypass`` (bypass with
``x-switchboard-cache-reason``); on a hit also ``x-switchboard-route: cache``,
``x-switchboard-cache-layer: exact`` and the model that first gave the answer in
``x-switchboard-model``. None when the cache is off for the tenant.

Purging a tenant (``purge``: the admin endpoint, a change of its approved answers) cannot list
its entries (keys are hashes). Instead each tenant has an *epoch*, a random token kept in the
store and mixed into its keys: a purge draws a new one, and every earlier entry is no longer
found (it expires or is evicted first: it is older than the epoch's record). Each process
re-reads a tenant's epoch at most every ``EPOCH_REFRESH_S``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec

from gateway.cache.key import cache_key, is_personalised_request, uncacheable_reason
from gateway.cache.store import CacheStore
from gateway.config import TIER_NAMES, CacheConfig
from gateway.pipeline.context import RequestContext
from gateway.tiers.base import Completion, Json, TokenLogprob
from gateway.usage import Usage

log = logging.getLogger("gateway.cache")

CACHE_HEADER = "x-switchboard-cache"
CACHE_REASON_HEADER = "x-switchboard-cache-reason"
# On every answer served without a model call from stored text: exact | answers | semantic.
CACHE_LAYER_HEADER = "x-switchboard-cache-layer"

ENTRY_VERSION = 1
# How often a process re-reads a tenant's epoch (another process may have purged it).
EPOCH_REFRESH_S = 5.0
# An epoch record outlives every entry (evicted last: it expires last, or was stored after them).
_EPOCH_TTL_S = 10 * 365 * 86_400.0


class CacheEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What is stored: a non-stream completion body and what the ledger needs of it."""

    v: int = ENTRY_VERSION
    model: str
    body: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    usage_estimated: bool = False
    stored_at: float = 0.0

    @property
    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            estimated=self.usage_estimated,
        )

    @property
    def text(self) -> str:
        choices = self.body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(CacheEntry).decode


def _directives(value: str) -> frozenset[str]:
    return frozenset(d.strip().lower() for d in value.split(",") if d.strip())


def usage_body(usage: Usage) -> Json:
    """An OpenAI ``usage`` object."""
    body: Json = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_prompt_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_prompt_tokens}
    return body


class CacheStage:
    name = "cache"

    def __init__(self, store: CacheStore, *, max_pieces: int = 8, min_piece_chars: int = 16):
        self.store = store
        self._max_pieces = max_pieces
        self._min_piece_chars = min_piece_chars
        # Misses per key not stored yet (see CacheConfig.admit_after), oldest key first.
        self._seen: dict[str, int] = {}
        # Tenant -> (epoch, when read): see the module docstring.
        self._epochs: dict[str, tuple[str, float]] = {}

    async def _scope(self, tenant: str) -> str:
        """The tenant as its cache keys name it: with its epoch once it has been purged."""
        now = time.monotonic()
        known = self._epochs.get(tenant)
        if known is None or now - known[1] >= EPOCH_REFRESH_S:
            raw = await self.store.get(_epoch_key(tenant))
            # A failed read is None too: keep the epoch known rather than reopen old entries.
            epoch = raw.decode() if raw else (known[0] if known else "")
            known = self._epochs[tenant] = (epoch, now)
        return f"{tenant}\x1f{known[0]}" if known[0] else tenant

    async def purge(self, tenant: str) -> None:
        """Make every entry of ``tenant`` unreachable, in this process at once, in the others
        within ``EPOCH_REFRESH_S``."""
        epoch = os.urandom(12).hex()
        await self.store.set(_epoch_key(tenant), epoch.encode(), _EPOCH_TTL_S)
        self._epochs[tenant] = (epoch, time.monotonic())
        self._seen.clear()

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.request is not None and ctx.tenant is not None
        config = ctx.runtime.config.cache
        if not config.enabled or not ctx.runtime.tenant(ctx.tenant).cache:
            return
        headers = ctx.response_headers
        if ctx.handoff is not None:
            # A conversation a person should take over gets a fresh answer, and keeps it.
            headers[CACHE_HEADER] = "bypass"
            headers[CACHE_REASON_HEADER] = "handoff"
            return
        masking = ctx.masking
        scope = await self._scope(ctx.tenant)
        if masking is None:
            key = cache_key(scope, ctx.payload)
        else:  # keyed on what a hosted model would see, plus keyed hashes of the masked values
            key = cache_key(scope, masking.payload, masking.value_hashes)
        if key is None:
            headers[CACHE_HEADER] = "bypass"
            headers[CACHE_REASON_HEADER] = f"uncacheable: {uncacheable_reason(ctx.payload)}"
            return
        if not config.personalised and is_personalised_request(ctx.payload):
            headers[CACHE_HEADER] = "bypass"
            headers[CACHE_REASON_HEADER] = "personalised"
            return
        directives = _directives(ctx.headers.get(CACHE_HEADER, ""))
        if "no-store" not in directives:
            ctx.cache_key = key
        if "no-cache" in directives:
            headers[CACHE_HEADER] = "bypass"
            headers[CACHE_REASON_HEADER] = "no-cache"
            return
        entry = self._read(await self.store.get(key))
        if entry is None:
            headers[CACHE_HEADER] = "miss"
            if ctx.cache_key is not None and not self._admit(key, config.admit_after, config):
                ctx.cache_key = None
            return
        self._answer(ctx, entry)

    def _admit(self, key: str, admit_after: int, config: CacheConfig) -> bool:
        """Whether this miss's answer should be stored: only once its request came back.

        With ``admit_after: 2`` (the default) one-off requests, most of a support stream and the
        likeliest to be about one customer, never reach the disk; a request asked again is
        stored on its second miss and served from then on. The memory of seen keys is per
        process and bounded like the cache.
        """
        if admit_after <= 1:
            return True
        misses = self._seen.pop(key, 0) + 1
        if misses >= admit_after:
            return True
        self._seen[key] = misses
        if len(self._seen) > config.max_entries:
            del self._seen[next(iter(self._seen))]
        return False

    @staticmethod
    def _read(raw: bytes | None) -> CacheEntry | None:
        if raw is None:
            return None
        try:
            entry = _decode(raw)
        except msgspec.DecodeError:
            log.warning("unreadable cache entry; treating as a miss")
            return None
        if entry.v != ENTRY_VERSION or not entry.text:
            return None
        return entry

    def _answer(self, ctx: RequestContext, entry: CacheEntry) -> None:
        assert ctx.request is not None
        usage = entry.usage
        created = int(time.time())
        chunk_id = f"chatcmpl-{ctx.request_id}"
        ctx.cache_key = None  # it is stored already
        ctx.served_by = "cache"
        ctx.cache_layer = "exact"
        if ctx.masking is not None:
            ctx.masking.answer_masked = True  # stored masked: the mask stage restores it
        ctx.model = entry.model
        ctx.usage = usage  # the tokens this hit saved, for the ledger and the savings
        ctx.response_headers.update(
            {
                "x-switchboard-route": "cache",
                "x-switchboard-model": entry.model,
                "x-switchboard-reason": "exact cache hit",
                CACHE_HEADER: "hit",
                CACHE_LAYER_HEADER: "exact",
            }
        )
        if ctx.request.wants_stream:
            fingerprint = entry.body.get("system_fingerprint")
            ctx.stream = ReplayStream(
                chunk_id=chunk_id,
                created=created,
                model=entry.model,
                pieces=self._pieces(entry.text),
                usage=usage,
                system_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            )
        else:
            body = entry.body  # decoded afresh for this request: ours to change
            body["id"] = chunk_id
            body["created"] = created
            ctx.completion = Completion(body=body, model=entry.model, usage=usage)

    def _pieces(self, text: str) -> list[str]:
        size = max(self._min_piece_chars, -(-len(text) // self._max_pieces))
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def exit(self, ctx: RequestContext) -> None:
        key = ctx.cache_key
        if key is None or ctx.served_by not in TIER_NAMES:
            return
        if ctx.status != 200 or ctx.error is not None:
            return  # failed, or the client left mid-stream (499): not a whole answer
        entry = _entry_of(ctx)
        if entry is None:
            return
        await self.store.set(key, _encode(entry), ctx.runtime.config.cache.ttl_s)


def _epoch_key(tenant: str) -> str:
    return "epoch:" + hashlib.sha256(tenant.encode()).hexdigest()


def encode_entry(entry: CacheEntry) -> bytes:
    return _encode(entry)


def entry_of(ctx: RequestContext) -> CacheEntry | None:
    """The tier's answer as a cache entry (masked for a masking tenant), or None when it is not a
    whole plain-text answer that ended with "stop"; the semantic cache stores the same."""
    return _entry_of(ctx)


def _entry_of(ctx: RequestContext) -> CacheEntry | None:
    """The answer as a cache entry, if it is a whole plain-text answer that ended with "stop".

    "length" (cut off), "content_filter" and tool calls are not answers to hand out again.
    """
    if ctx.completion is not None:
        body = ctx.completion.body
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) != 1:
            return None
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or choice.get("finish_reason") != "stop":
            return None
        text = message.get("content")
        if not isinstance(text, str) or not text or message.get("tool_calls"):
            return None
        model = ctx.completion.model
        usage = ctx.completion.usage or ctx.usage
    elif ctx.stream is not None:
        if ctx.finish_reason != "stop":
            return None
        text = "".join(ctx.streamed_text)
        if not text:
            return None
        model = ctx.model or ctx.stream.model
        usage = ctx.usage
        body = {
            "id": "chatcmpl-cache",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
        }
    else:
        return None
    if ctx.masking is not None:
        # Only the masked form is kept: this request's values become its placeholders again
        # (a hit restores them from its own request), and an answer holding any other personal
        # value is not stored at all.
        stored = ctx.masking.storable(text)
        if stored is None:
            return None
        if stored != text:
            text = stored
            body = {**body, "choices": [_with_content(body["choices"][0], text)]}
    if usage is None:
        # The upstream reported none: count now, as ``settle`` does, so a hit can report it.
        usage = Usage(
            prompt_tokens=ctx.prompt_tokens,
            completion_tokens=ctx.runtime.tokens.count_text(text, model),
            estimated=True,
        )
    if ctx.stream is not None:
        body["usage"] = usage_body(usage)
    return CacheEntry(
        model=model,
        body=body,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        usage_estimated=usage.estimated,
        stored_at=time.time(),
    )


def _with_content(choice: dict[str, Any], text: str) -> dict[str, Any]:
    return {**choice, "message": {**choice["message"], "content": text}}


class ReplayStream:
    """A stored answer as OpenAI streams one: a role chunk, the text in a few pieces, the finish
    chunk, then the usage-only chunk (the relay drops it unless the client asked for usage)."""

    def __init__(
        self,
        *,
        chunk_id: str,
        created: int,
        model: str,
        pieces: list[str],
        usage: Usage,
        system_fingerprint: str | None = None,
    ) -> None:
        self.model = model
        self._chunk_id = chunk_id
        self._created = created
        self._pieces = pieces
        self._usage = usage
        self._fingerprint = system_fingerprint
        # Like a tier's stream: known once the usage chunk has passed, so a client that leaves
        # early is counted for what it was sent.
        self.usage: Usage | None = None
        self.logprobs: list[TokenLogprob] = []
        self._iterators: list[AsyncGenerator[Json, None]] = []

    def _chunk(self, choices: list[Json]) -> Json:
        chunk: Json = {
            "id": self._chunk_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": choices,
            "usage": None,
        }
        if self._fingerprint is not None:
            chunk["system_fingerprint"] = self._fingerprint
        return chunk

    @staticmethod
    def _choice(delta: Json, finish_reason: str | None = None) -> Json:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def __aiter__(self) -> AsyncIterator[Json]:
        iterator = self._chunks()
        self._iterators.append(iterator)
        return iterator

    async def _chunks(self) -> AsyncGenerator[Json, None]:
        yield self._chunk([self._choice({"role": "assistant", "content": ""})])
        for piece in self._pieces:
            yield self._chunk([self._choice({"content": piece})])
        yield self._chunk([self._choice({}, "stop")])
        self.usage = self._usage
        final = self._chunk([])
        final["usage"] = usage_body(self._usage)
        yield final

    async def aclose(self) -> None:
        for iterator in self._iterators:
            await iterator.aclose()
