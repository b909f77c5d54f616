"""The semantic response cache: a later request that means the same gets the stored answer.

What a pipeline stage calls::

    cache = SemanticCache(store, secret=..., policies={"shop": SemanticPolicy(threshold=0.93)})
    found = cache.lookup("shop", last_user_text, history=earlier_turns, request_id=rid)
    if found.hit: serve found.hit.answer            # bytes the stage stored, e.g. a CacheEntry
    ... a tier answered ...
    cache.store("shop", last_user_text, answer_bytes, history=earlier_turns, request_id=rid)

A lookup embeds the text with its entities masked (``guards.mask``), takes the few nearest
entries of the tenant's in-process index, and serves the first whose cosine reaches the tenant's
threshold, that has not expired, whose earlier turns are the same, and whose guard signature
does not conflict (``guards.conflict``: entities, negation, direction, minimal pairs). Every
outcome has a reason (for ``x-switchboard-cache-reason`` and for tuning).

Refused outright, by policy: personalised text (an order number, an e-mail, an amount:
``gateway.cache.key.is_personalised``) unless ``personalised: true``, and any request with
earlier turns unless ``multi_turn: true`` (then only the same earlier turns match). Never across
tenants: each tenant has its own index, store keys and entity key.

Feedback: ``invalidate_request(tenant, request_id)`` removes the entry a request was served from
(or whose answer it produced), so a ``bad`` verdict takes a wrong answer out at once.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec
import numpy as np
from msgspec import Meta

from gateway.cache.key import is_personalised, nfkc
from gateway.cache.semantic.guards import (
    Signature,
    conflict,
    mask,
    normalise,
    signature,
    tenant_key,
)
from gateway.cache.semantic.index import VectorIndex
from gateway.cache.semantic.store import SemanticEntry, SemanticStore
from gateway.embedder import Embedder, default_embedder

__all__ = ["Lookup", "SemanticCache", "SemanticHit", "SemanticPolicy"]

# How many nearest entries are checked against the guards before giving up.
CANDIDATES = 8


class SemanticPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One tenant's semantic-cache settings (``semantic_cache:`` in the config, next session)."""

    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.85
    ttl_s: Annotated[float, Meta(gt=0)] = 86_400.0
    max_entries: Annotated[int, Meta(ge=1)] = 10_000
    multi_turn: bool = False
    personalised: bool = False


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry_id: str
    answer: bytes
    score: float
    stored_at: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """``hit`` (or None) and why: ``hit``, ``empty``, ``below threshold``, ``guard: negation``,
    ``personalised``, ``multi-turn``, ``no text``."""

    hit: SemanticHit | None
    reason: str
    score: float | None = None


def _context_hash(history: Sequence[str], scope: Sequence[str] = ()) -> str:
    if not history and not scope:
        return ""
    material = "\x1e".join(normalise(t) for t in history)
    if scope:
        # What else must be equal (the pipeline's requested model, system prompt, masked values'
        # keyed hashes), kept apart from the turns so a turn cannot pose as scope.
        material += "\x1d" + "\x1e".join(scope)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(slots=True)
class _Tenant:
    index: VectorIndex
    meta: dict[str, tuple[Signature, str, float, float]]  # id → signature, context, stored, expires


class SemanticCache:
    """Per-tenant semantic cache over a :class:`SemanticStore`. Thread-safe."""

    def __init__(
        self,
        store: SemanticStore,
        *,
        secret: bytes,
        embedder: Embedder | None = None,
        default: SemanticPolicy | None = None,
        policies: Mapping[str, SemanticPolicy] | None = None,
        clock: Callable[[], float] = time.time,
        secrets: Mapping[str, bytes] | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the semantic cache's secret must be at least 16 bytes")
        self.backend = store
        self._secret = secret
        # Per-tenant keys of the entity hashes (tenants.NAME.semantic_cache.secret_env).
        self._secrets = dict(secrets or {})
        self._embedder = embedder
        self.default = default or SemanticPolicy()
        self.policies = dict(policies or {})
        self._clock = clock
        self._tenants: dict[str, _Tenant] = {}
        self._keys: dict[str, bytes] = {}
        self._lock = threading.RLock()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def embedder_if_loaded(self) -> Embedder | None:
        """The embedder without loading the default one (for closing at shutdown)."""
        return self._embedder

    def policy(self, tenant: str) -> SemanticPolicy:
        return self.policies.get(tenant, self.default)

    def configure(
        self, policies: Mapping[str, SemanticPolicy], secrets: Mapping[str, bytes]
    ) -> None:
        """New per-tenant policies and entity keys (a config reload); entries stay."""
        with self._lock:
            self.policies = dict(policies)
            if dict(secrets) != self._secrets:
                self._secrets = dict(secrets)
                self._keys.clear()

    def tenants(self) -> list[str]:
        """The tenants whose entries this process has indexed."""
        with self._lock:
            return list(self._tenants)

    def _key(self, tenant: str) -> bytes:
        key = self._keys.get(tenant)
        if key is None:
            secret = self._secrets.get(tenant, self._secret)
            key = self._keys[tenant] = tenant_key(secret, tenant)
        return key

    def _tenant(self, tenant: str) -> _Tenant:
        loaded = self._tenants.get(tenant)
        if loaded is None:
            loaded = self._load(tenant)
        return loaded

    def _load(self, tenant: str) -> _Tenant:
        loaded = _Tenant(index=VectorIndex(self.embedder.dim), meta={})
        now = self._clock()
        entries = sorted(
            (e for e in self.backend.entries(tenant) if not e.expired(now)),
            key=lambda e: e.stored_at,
        )
        for entry in entries:
            self._index(loaded, entry)
        self._tenants[tenant] = loaded
        return loaded

    def _index(self, loaded: _Tenant, entry: SemanticEntry) -> None:
        vector = np.frombuffer(entry.vector, dtype="<f4")
        if vector.shape != (self.embedder.dim,):
            return  # written with another embedder
        loaded.index.add(entry.id, vector)
        loaded.meta[entry.id] = (
            Signature.from_json(entry.signature),
            entry.context,
            entry.stored_at,
            entry.expires_at,
        )

    def refresh(self, tenant: str) -> None:
        """Re-read the tenant's entries from the store (another process may have written)."""
        with self._lock:
            self._load(tenant)

    def _refusal(self, tenant: str, text: str, history: Sequence[str]) -> str | None:
        policy = self.policy(tenant)
        if not text.strip():
            return "no text"
        if history and not policy.multi_turn:
            return "multi-turn"
        if not policy.personalised and (
            is_personalised(text) or any(is_personalised(t) for t in history)
        ):
            return "personalised"
        return None

    def _prepare(self, tenant: str, text: str) -> tuple[np.ndarray, Signature]:
        clean = normalise(nfkc(text))
        return self.embedder.embed(mask(clean)), signature(clean, self._key(tenant))

    # --- the two calls of the pipeline ----------------------------------------------------------

    def lookup(
        self,
        tenant: str,
        text: str,
        *,
        history: Sequence[str] = (),
        request_id: str | None = None,
        scope: Sequence[str] = (),
    ) -> Lookup:
        """The stored answer for a request that means the same as ``text``, or why none.

        ``text`` is the last user message, ``history`` the earlier turns' texts, ``scope`` what
        else must be equal (model, system prompt, masked values' hashes). With ``request_id``, a
        hit is remembered so feedback on this request can invalidate it.
        """
        refused = self._refusal(tenant, text, history)
        if refused is not None:
            return Lookup(None, refused)
        policy = self.policy(tenant)
        vector, sig = self._prepare(tenant, text)
        context = _context_hash(history, scope)
        now = self._clock()
        with self._lock:
            loaded = self._tenant(tenant)
            if not len(loaded.index):
                return Lookup(None, "empty")
            candidates = loaded.index.search(vector, CANDIDATES)
            best = candidates[0][1]
            reason = f"below threshold ({best:.3f} < {policy.threshold:.3f})"
            for entry_id, score in candidates:
                if score < policy.threshold:
                    break
                other, other_context, stored_at, expires_at = loaded.meta[entry_id]
                if expires_at <= now:
                    self._forget(tenant, loaded, entry_id)
                    continue
                if other_context != context:
                    reason = "other earlier turns or scope"
                    continue
                why = conflict(sig, other)
                if why is not None:
                    if reason.startswith("below"):
                        reason = f"guard: {why}"
                    continue
                entry = self.backend.get(tenant, entry_id)
                if entry is None:  # gone from the store (another process, eviction)
                    self._forget(tenant, loaded, entry_id, delete=False)
                    continue
                if request_id is not None:
                    self.backend.link(tenant, request_id, entry_id, policy.ttl_s)
                return Lookup(SemanticHit(entry_id, entry.answer, score, stored_at), "hit", score)
            return Lookup(None, reason, best)

    def store(
        self,
        tenant: str,
        text: str,
        answer: bytes,
        *,
        history: Sequence[str] = (),
        request_id: str | None = None,
        scope: Sequence[str] = (),
    ) -> str | None:
        """Store ``answer`` for ``text``; the new entry's id, or None when policy refuses it."""
        if self._refusal(tenant, text, history) is not None:
            return None
        policy = self.policy(tenant)
        vector, sig = self._prepare(tenant, text)
        now = self._clock()
        entry = SemanticEntry(
            id=uuid.uuid4().hex,
            tenant=tenant,
            vector=np.asarray(vector, dtype="<f4").tobytes(),
            signature=sig.as_json(),
            context=_context_hash(history, scope),
            answer=answer,
            stored_at=now,
            expires_at=now + policy.ttl_s,
            request_id=request_id,
        )
        with self._lock:
            loaded = self._tenant(tenant)
            while len(loaded.index) >= policy.max_entries:
                oldest = loaded.index.oldest()
                assert oldest is not None
                self._forget(tenant, loaded, oldest)
            self.backend.put(entry)
            self._index(loaded, entry)
        if request_id is not None:
            self.backend.link(tenant, request_id, entry.id, policy.ttl_s)
        return entry.id

    # --- feedback and admin -----------------------------------------------------------------------

    def _forget(self, tenant: str, loaded: _Tenant, entry_id: str, *, delete: bool = True) -> None:
        loaded.index.remove(entry_id)
        loaded.meta.pop(entry_id, None)
        if delete:
            self.backend.delete(tenant, entry_id)

    def invalidate(self, tenant: str, entry_id: str) -> bool:
        """Remove one entry; False when the tenant has no such entry."""
        with self._lock:
            loaded = self._tenant(tenant)
            known = entry_id in loaded.index
            self._forget(tenant, loaded, entry_id, delete=False)
            return self.backend.delete(tenant, entry_id) or known

    def invalidate_request(self, tenant: str, request_id: str) -> bool:
        """Remove the entry ``request_id`` was served from (or stored); for a ``bad`` verdict."""
        entry_id = self.backend.linked(tenant, request_id)
        return entry_id is not None and self.invalidate(tenant, entry_id)

    def purge(self, tenant: str) -> int:
        """Remove all the tenant's entries (after a config change of its answers, say)."""
        with self._lock:
            self._tenants.pop(tenant, None)
            return self.backend.purge(tenant)

    def size(self, tenant: str) -> int:
        with self._lock:
            return len(self._tenant(tenant).index)
