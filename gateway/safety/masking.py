"""Masking personal values before text leaves for a hosted model, and restoring them in the answer.

A pipeline stage uses it like this (one :class:`Masker` per tenant, built at config load)::

    masked = masker.mask_all([m["content"] for m in messages])   # one numbering per request
    # send masked.texts upstream; cache keys and guards may use masked.value_hashes
    answer = restore(upstream_text, masked.placeholders)          # non-streaming
    restorer = Restorer(masked.placeholders)                      # streaming
    for delta in deltas: send(restorer.feed(delta))
    send(restorer.flush())

Placeholders are ``[TYPE_N]`` (``[PHONE_1]``, ``[EMAIL_2]``, ``[CN_ID_1]``), numbered per type in
order of appearance across the whole request, so the model sees the same placeholder wherever
the same value comes back (``138-1234-5678`` and ``13812345678`` are one phone). A customer who
types a placeholder-like string ("why does my SMS say [PHONE_1]?") keeps it: numbering skips
every placeholder-like string already in the request, and :func:`restore` replaces only the
placeholders this request handed out, so the customer's own text survives the round trip.

``value_hashes`` holds HMAC-SHA256(tenant secret, type + normalised value) per placeholder: two
requests about the same phone number hash alike for the same tenant, and nothing can be learnt
from the hash without the tenant's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.safety.entities import (
    BANK_ACCOUNT,
    CARD,
    CN_ID,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    PHONE,
    Entity,
    find_entities,
    fold,
)

_NON_DIGITS = re.compile(r"\D+")
# Anything shaped like a placeholder, ours or typed by a customer.
PLACEHOLDER = re.compile(r"\[([A-Z]+(?:_[A-Z]+)*)_(\d{1,4})\]")


class Found(NamedTuple):
    """One masked value: its type, its span in the original text and its placeholder."""

    type: str
    start: int
    end: int
    placeholder: str


@dataclass(frozen=True, slots=True)
class Masked:
    """One text masked: what leaves (``text``), what was found, and what restores it."""

    text: str
    found: tuple[Found, ...]
    placeholders: Mapping[str, str]  # placeholder -> the original value
    value_hashes: Mapping[str, str]  # placeholder -> keyed hash of the normalised value


@dataclass(frozen=True, slots=True)
class MaskedTexts:
    """Several texts of one request masked with one numbering (see :meth:`Masker.mask_all`)."""

    texts: tuple[str, ...]
    found: tuple[tuple[Found, ...], ...]
    placeholders: Mapping[str, str]
    value_hashes: Mapping[str, str]

    @property
    def changed(self) -> bool:
        return any(self.found)


def tenant_secret(master: bytes, tenant: str) -> bytes:
    """A tenant's hashing key derived from one master key: HMAC-SHA256(master, tenant)."""
    return hmac.new(master, b"switchboard-mask\x00" + tenant.encode(), hashlib.sha256).digest()


def normalised_value(kind: str, value: str) -> str:
    """The form two spellings of one value share: digits only for numbers (``+86`` dropped
    from a Chinese mobile), case-folded e-mail, upper-case IBAN and ID, collapsed spaces."""
    value = fold(value)
    if kind == EMAIL:
        return value.strip().lower()
    if kind in (IBAN, CN_ID):
        return "".join(value.split()).upper()
    if kind in (PHONE, CARD, BANK_ACCOUNT):
        digits = _NON_DIGITS.sub("", value)
        if kind == PHONE:
            if len(digits) == 15 and digits.startswith("0086"):
                digits = digits[4:]
            elif len(digits) == 13 and digits.startswith("86"):
                digits = digits[2:]
        return digits
    return " ".join(value.split())


@dataclass
class _Numbering:
    """Placeholders handed out so far in one request."""

    reserved: set[str]
    by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    def placeholder(self, entity: Entity, keyed: hmac.HMAC | None) -> str:
        norm = normalised_value(entity.type, entity.value)
        key = (entity.type, norm)
        existing = self.by_value.get(key)
        if existing is not None:
            return existing
        label = entity.type.upper()
        n = self.counters.get(label, 0)
        while True:
            n += 1
            name = f"[{label}_{n}]"
            if name not in self.reserved:
                break
        self.counters[label] = n
        self.by_value[key] = name
        self.placeholders[name] = entity.value
        if keyed is not None:
            mac = keyed.copy()  # the key schedule is done once per Masker, not per value
            mac.update(f"{entity.type}\x00{norm}".encode())
            self.hashes[name] = mac.hexdigest()
        return name


def value_hash(secret: bytes, kind: str, normalised: str) -> str:
    """HMAC-SHA256 of ``kind`` and a normalised value under a tenant's secret (hex)."""
    return hmac.new(secret, f"{kind}\x00{normalised}".encode(), hashlib.sha256).hexdigest()


class Masker:
    """Finds and replaces personal values; one per tenant (its types and its secret)."""

    def __init__(self, types: Iterable[str] | None = None, *, secret: bytes | None = None) -> None:
        chosen = frozenset(ENTITY_TYPES if types is None else types)
        unknown = chosen - set(ENTITY_TYPES)
        if unknown:
            raise ValueError(
                f"unknown masking type(s) {', '.join(sorted(unknown))}; choose from "
                f"{', '.join(ENTITY_TYPES)}"
            )
        self.types = chosen
        self._keyed = None if secret is None else hmac.new(secret, digestmod=hashlib.sha256)

    def find(self, text: str) -> list[Entity]:
        return find_entities(text, self.types)

    def mask(self, text: str) -> Masked:
        """Mask one text (a request of one message)."""
        batch = self.mask_all([text])
        return Masked(batch.texts[0], batch.found[0], batch.placeholders, batch.value_hashes)

    def mask_all(self, texts: Sequence[str]) -> MaskedTexts:
        """Mask every text of one request with one numbering: the same value gets the same
        placeholder in every message, and no placeholder collides with one a customer typed."""
        reserved = {m.group() for t in texts if "[" in t for m in PLACEHOLDER.finditer(t)}
        numbering = _Numbering(reserved)
        out: list[str] = []
        found: list[tuple[Found, ...]] = []
        for text in texts:
            entities = self.find(text)
            if not entities:
                out.append(text)
                found.append(())
                continue
            parts: list[str] = []
            this: list[Found] = []
            pos = 0
            for entity in entities:
                name = numbering.placeholder(entity, self._keyed)
                parts.append(text[pos : entity.start])
                parts.append(name)
                pos = entity.end
                this.append(Found(entity.type, entity.start, entity.end, name))
            parts.append(text[pos:])
            out.append("".join(parts))
            found.append(tuple(this))
        return MaskedTexts(tuple(out), tuple(found), numbering.placeholders, numbering.hashes)


def restore(text: str, placeholders: Mapping[str, str]) -> str:
    """``text`` with this request's placeholders put back; any other ``[...]`` left alone."""
    if not placeholders or "[" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: placeholders.get(m.group(), m.group()), text)


class Restorer:
    """Restores placeholders in a stream of deltas (SSE ``delta.content`` strings).

    A placeholder may arrive split across chunks (``"[PHO"``, ``"NE_1]"``): the restorer holds
    back only a tail that could still become one of this request's placeholders, and emits it
    with the next delta (restored when it completes) or at :meth:`flush`. Everything else is
    emitted at once, so the stream is delayed by at most one placeholder's length.
    """

    def __init__(self, placeholders: Mapping[str, str]) -> None:
        self._placeholders = placeholders
        self._longest = max((len(p) for p in placeholders), default=0)
        self._pending = ""

    def feed(self, delta: str) -> str:
        if not self._placeholders:
            return delta
        text = self._pending + delta if self._pending else delta
        self._pending = ""
        cut = text.rfind("[")
        if cut >= 0 and len(text) - cut < self._longest:
            tail = text[cut:]
            if any(p.startswith(tail) for p in self._placeholders):
                self._pending = tail
                text = text[:cut]
        return restore(text, self._placeholders)

    def flush(self) -> str:
        """What is still held back (the stream ended inside something placeholder-like)."""
        pending, self._pending = self._pending, ""
        return pending
