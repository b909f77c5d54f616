"""Customer-service safeguards: masking personal data before a hosted model sees it (and
restoring it in the answer), and detecting when a person should take the conversation over.

Plain functions and classes, no I/O: a pipeline stage builds a :class:`Masker` and a
:class:`HandoffConfig` per tenant and calls them (docs/safety.md).
"""

from gateway.safety.config import MaskingConfig
from gateway.safety.entities import CHECKSUM_TYPES, ENTITY_TYPES, Entity, find_entities
from gateway.safety.handoff import (
    SIGNALS,
    HandoffConfig,
    HandoffSignal,
    detect_handoff,
    handoff_signals,
)
from gateway.safety.masking import (
    Found,
    Masked,
    MaskedTexts,
    Masker,
    Restorer,
    restore,
    tenant_secret,
    value_hash,
)

__all__ = [
    "CHECKSUM_TYPES",
    "ENTITY_TYPES",
    "SIGNALS",
    "Entity",
    "Found",
    "HandoffConfig",
    "HandoffSignal",
    "Masked",
    "MaskingConfig",
    "MaskedTexts",
    "Masker",
    "Restorer",
    "detect_handoff",
    "find_entities",
    "handoff_signals",
    "restore",
    "tenant_secret",
    "value_hash",
]
