"""A tenant's safeguard settings, as the config holds them (``tenants.NAME.safety``).

``masking`` is :class:`MaskingConfig`; ``handoff`` is :class:`HandoffPolicy`, the detector's
:class:`HandoffConfig` plus what the gateway does on a signal; ``cascade`` is
:class:`CascadeConfig` (small tier first, the large one when unsure). All are off by default. The
config loader (``gateway.config``) embeds :class:`SafetyConfig` in each tenant and checks the
cascade's tiers; the pipeline (``gateway.pipeline.handoff``, ``gateway.pipeline.masking``,
``gateway.pipeline.cascade``) reads it.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from gateway.safety.confidence import CascadeConfig
from gateway.safety.entities import ENTITY_TYPES
from gateway.safety.handoff import HandoffConfig
from gateway.safety.masking import Masker

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MaskingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``enabled``: mask before a hosted tier; ``types``: which values; ``exempt_small_tier``:
    the small tier sees the text unmasked when it runs on our own hardware (in-process, or an
    upstream marked ``local: true``: the text never leaves the machine); ``secret_env``: the
    environment variable holding the key of the value hashes (unset: a random key per process,
    so hashes, and the cache entries keyed by them, are not shared between processes)."""

    enabled: bool = False
    types: tuple[str, ...] = ENTITY_TYPES
    exempt_small_tier: bool = True
    secret_env: str | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in ENTITY_TYPES]
        if unknown:
            raise ValueError(
                f"unknown masking type(s) {', '.join(unknown)}; choose from "
                f"{', '.join(ENTITY_TYPES)}"
            )
        if not self.types:
            raise ValueError("types is empty; leave it out for every type, or set enabled: false")
        if self.secret_env is not None and not _ENV_NAME.fullmatch(self.secret_env):
            raise ValueError(
                f"secret_env {self.secret_env!r} is not an environment variable name; give the "
                "variable's name (e.g. ACME_MASK_SECRET), never the secret itself"
            )

    def masker(self, secret: bytes) -> Masker:
        """The tenant's masker (``secret``: :func:`gateway.safety.tenant_secret`)."""
        return Masker(self.types, secret=secret)


HandoffAction = Literal["none", "large", "answer"]
HANDOFF_ACTIONS: tuple[str, ...] = ("none", "large", "answer")


class HandoffPolicy(HandoffConfig, frozen=True, forbid_unknown_fields=True):
    """What the detector looks for (:class:`HandoffConfig`'s fields) and what the gateway does
    when it finds it. ``action``: ``none`` (the ``x-switchboard-handoff`` header only),
    ``large`` (route the request to the large tier), ``answer`` (answer with ``answer``, an
    approved holding text, without calling a model)."""

    enabled: bool = False
    action: HandoffAction = "none"
    answer: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.action == "answer" and not (self.answer and self.answer.strip()):
            raise ValueError(
                "action `answer` needs `answer`: the holding text the customer gets, e.g. "
                "\"I'm passing you to a colleague who will reply shortly.\""
            )
        if self.answer is not None and self.action != "answer":
            raise ValueError(
                f"`answer` is only used with `action: answer` (the action is {self.action!r})"
            )


class SafetyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``tenants.NAME.safety``: privacy masking, human handoff and the small-first cascade, each
    off unless enabled."""

    masking: MaskingConfig = MaskingConfig()
    handoff: HandoffPolicy = HandoffPolicy()
    cascade: CascadeConfig = CascadeConfig()
