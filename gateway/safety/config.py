"""A tenant's masking settings, as the config will hold them (``tenants.NAME.masking``).

Not read by the gateway yet (the pipeline stage comes next); defined here so the stage and the
config loader share one validated shape. Handoff settings are :class:`HandoffConfig` in
``handoff.py``.
"""

from __future__ import annotations

import msgspec

from gateway.safety.entities import ENTITY_TYPES
from gateway.safety.masking import Masker


class MaskingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``enabled``: mask before a hosted tier; ``types``: which values; ``exempt_small_tier``:
    the in-process small tier sees the text unmasked (it never leaves the machine)."""

    enabled: bool = False
    types: tuple[str, ...] = ENTITY_TYPES
    exempt_small_tier: bool = True

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in ENTITY_TYPES]
        if unknown:
            raise ValueError(
                f"unknown masking type(s) {', '.join(unknown)}; choose from "
                f"{', '.join(ENTITY_TYPES)}"
            )
        if not self.types:
            raise ValueError("types is empty; leave it out for every type, or set enabled: false")

    def masker(self, secret: bytes) -> Masker:
        """The tenant's masker (``secret``: :func:`gateway.safety.tenant_secret`)."""
        return Masker(self.types, secret=secret)
