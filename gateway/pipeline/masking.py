"""The ``mask`` stage: personal values replaced by placeholders before text leaves for a hosted
tier, and put back in the answer.

Per tenant with ``safety.masking.enabled`` (docs/safety.md):

- ``enter`` masks every text of the request once (every text part of every message, system and
  tool results included, and the arguments of earlier tool calls) with one numbering, and keeps
  the result on ``ctx.masking``: the masked payload, the placeholders (request memory only: never
  logged or stored) and the keyed value hashes. Image and audio parts are left alone.
- The cache keys the request on the masked payload plus the value hashes, and stores answers in
  their masked form only (``RequestMasking.storable``); the ledger's ``request_text`` is masked.
- The tier stage sends the masked payload to every tier that is not exempt
  (``RequestMasking.masks``), and sets ``x-switchboard-masked`` (counts per type, never values).
- ``exit`` restores a whole answer (message content, refusal, tool-call arguments); a stream is
  restored chunk by chunk in ``gateway.pipeline.streaming`` through :class:`Restorer`.

Placed after ``handoff`` (which reads the customer's own words) and before ``route`` and every
stage that can answer (approved answers, caches), so they can key on the masked request; which
tier gets it masked is decided per attempt by the tier stage. Exits run in reverse, so the cache
stores the masked answer before this stage's ``exit`` restores it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.pipeline.context import RequestContext
from gateway.safety.masking import MaskedTexts, Masker, Restorer, restore, tenant_secret

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger("gateway.pipeline")

MASKED_HEADER = "x-switchboard-masked"

# The key of value hashes for tenants that name no secret: random per process, so such hashes
# (and cache entries keyed by them) are never shared between processes or across restarts.
_PROCESS_SECRET = os.urandom(32)

# Content part types that carry text to mask; any other part (images, audio, files) is left alone.
_TEXT_PARTS = frozenset({"text", "input_text"})


class MaskingSecretMissing(ValueError):
    """A tenant names an environment variable for its masking secret that is not set."""


@dataclass(frozen=True, slots=True)
class TenantMasking:
    """A tenant's masker and the tiers that see its requests unmasked."""

    masker: Masker
    exempt_tiers: frozenset[str]


def build_tenant_masking(
    config: GatewayConfig, env: Mapping[str, str]
) -> dict[str, TenantMasking]:
    """One :class:`TenantMasking` per tenant with masking on; raises
    :class:`MaskingSecretMissing` when a named secret variable is unset."""
    tiers = config.tiers.configured()
    local = frozenset(
        name for name, tier in tiers.items() if config.upstreams[tier.upstream].is_local
    )
    out: dict[str, TenantMasking] = {}
    for tenant, tc in config.tenants.items():
        cfg = tc.safety.masking
        if not cfg.enabled:
            continue
        master = _PROCESS_SECRET
        if cfg.secret_env is not None:
            value = env.get(cfg.secret_env)
            if not value:
                raise MaskingSecretMissing(
                    f"$.tenants.{tenant}.safety.masking.secret_env: environment variable "
                    f"{cfg.secret_env} is not set; set it to a long random string (e.g. "
                    "`openssl rand -hex 32`), or remove `secret_env` for a per-process key"
                )
            master = value.encode()
        exempt = frozenset({"small"} & local) if cfg.exempt_small_tier else frozenset()
        out[tenant] = TenantMasking(cfg.masker(tenant_secret(master, tenant)), exempt)
    return out


# --- one request -------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestMasking:
    """One request's masking: what leaves, what restores it, and what the cache may key on."""

    masker: Masker
    exempt_tiers: frozenset[str]
    masked: MaskedTexts
    # The request as it leaves for a masked tier (the original payload when nothing was found).
    payload: dict[str, Any]
    # True once a tier was sent the masked payload or the answer came from the (masked) cache:
    # the answer then holds placeholders to restore.
    answer_masked: bool = False
    # The placeholders with their values JSON-escaped, for tool-call arguments (JSON text).
    _json_values: dict[str, str] | None = field(default=None, repr=False)

    @property
    def placeholders(self) -> Mapping[str, str]:
        return self.masked.placeholders

    @property
    def value_hashes(self) -> Mapping[str, str]:
        return self.masked.value_hashes

    @property
    def changed(self) -> bool:
        return self.masked.changed

    def masks(self, tier: str) -> bool:
        """Does ``tier`` get the masked request?"""
        return tier not in self.exempt_tiers

    def header_value(self) -> str | None:
        """``PHONE=1,EMAIL=2``: how many distinct values of each type left masked."""
        counts: dict[str, int] = {}
        for placeholder in self.placeholders:
            kind = placeholder[1:].rsplit("_", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return ",".join(f"{k}={n}" for k, n in counts.items()) or None

    @property
    def json_placeholders(self) -> Mapping[str, str]:
        if self._json_values is None:
            self._json_values = {
                p: json.dumps(v, ensure_ascii=False)[1:-1] for p, v in self.placeholders.items()
            }
        return self._json_values

    def storable(self, text: str) -> str | None:
        """``text`` (an answer) as the cache may keep it: this request's values replaced by
        their placeholders; None when it still holds a value the masker finds."""
        for placeholder, value in self.placeholders.items():
            if value in text:
                text = text.replace(value, placeholder)
        if self.masker.find(text):
            return None
        return text

    def restore_body(self, body: dict[str, Any]) -> None:
        """Put the values back into a whole chat completion body, in place."""
        choices = body.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            for name in ("content", "refusal"):
                if isinstance(message.get(name), str):
                    message[name] = restore(message[name], self.placeholders)
            for call in _calls(message):
                function = call.get("function") if "function" in call else call
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    function["arguments"] = restore(function["arguments"], self.json_placeholders)

    def restorer(self, *, json_text: bool = False) -> Restorer:
        return Restorer(self.json_placeholders if json_text else self.placeholders)


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    out = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        out.append({"function": legacy})
    return out


def _slots(payload: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Where the texts of a payload's messages are: (container, key) pairs, in order."""
    messages = payload.get("messages")
    slots: list[tuple[dict[str, Any], str]] = []
    if not isinstance(messages, list):
        return slots
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            slots.append((message, "content"))
        elif isinstance(content, list):
            for part in content:
                if (
                    isinstance(part, dict)
                    and part.get("type", "text") in _TEXT_PARTS
                    and isinstance(part.get("text"), str)
                ):
                    slots.append((part, "text"))
        for call in _calls(message):
            function = call.get("function")
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                slots.append((function, "arguments"))
    return slots


def mask_request(
    masker: Masker, exempt: frozenset[str], payload: dict[str, Any]
) -> RequestMasking:
    """Mask every text of ``payload``'s messages with one numbering."""
    masked = masker.mask_all([container[key] for container, key in _slots(payload)])
    if not masked.changed:
        return RequestMasking(masker, exempt, masked, payload)
    out = copy.deepcopy(payload)  # strings are shared, not copied: images cost nothing here
    for (container, key), text in zip(_slots(out), masked.texts, strict=True):
        container[key] = text
    return RequestMasking(masker, exempt, masked, out)


def last_user_text(payload: Mapping[str, Any]) -> str:
    """The text of the last user message of a payload (masked payloads for the ledger)."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
            return ""
    return ""


class MaskStage:
    name = "mask"

    async def enter(self, ctx: RequestContext) -> None:
        assert ctx.tenant is not None
        tenant = ctx.runtime.masking.get(ctx.tenant)
        if tenant is None:
            return
        ctx.masking = mask_request(tenant.masker, tenant.exempt_tiers, ctx.payload)

    async def exit(self, ctx: RequestContext) -> None:
        masking = ctx.masking
        if masking is None or not masking.answer_masked or not masking.placeholders:
            return
        if ctx.completion is not None:
            masking.restore_body(ctx.completion.body)
