"""The approved-answers settings as the config holds them: ``answers:`` and
``tenants.NAME.answers`` (docs/caching.md).

A tenant opts in by naming its answers file and the model ``gateway answers train`` wrote for it;
the gateway never trains at load (training needs scikit-learn and takes seconds to minutes): a
missing model is a config error that names the command to run.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

NonEmpty = Annotated[str, Meta(min_length=1)]


class AnswersConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``answers:``: the switch for every tenant (a tenant still opts in with its own block)."""

    enabled: bool = True


class TenantAnswersConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``tenants.NAME.answers``: the tenant's approved answers.

    ``file``: the answers file (JSONL, ``config/answers/NAME.jsonl``); ``model``: the matcher
    ``gateway answers train --data FILE --out MODEL`` wrote from it. Relative paths are read
    from the gateway's working directory, like ``router.classifier.weights``.
    ``values``: placeholder values the gateway fills in every answer (``support_hours``);
    placeholders without a value are sent as written (``{order_id}``) for the bot to fill, and
    named in ``x-switchboard-placeholders``. ``multi_turn``: also answer a request with earlier
    turns (off: only a conversation's first question, where the last message says it all).
    """

    file: NonEmpty
    model: NonEmpty
    values: dict[str, str] = {}
    multi_turn: bool = False
