"""Approved answers as a pipeline stage will call them: ``ApprovedAnswers.match(tenant, text)``.

Each tenant has an answers file (``file.py``) and a model trained from it (``gateway answers
train --data config/answers/TENANT.jsonl --out ...``). ``match`` returns the approved answer of the
one intent the last user message matches with at least the model's confidence threshold, or None
(abstain: let the semantic cache or a model answer). The answer is the tenant's text, word for
word; only the placeholders it declares are left for the bot to fill (``Match.render``).

A model trained on other examples than the file now holds (``stale``) still serves the intents
the file has, and abstains on intents the file no longer has: an answer is never served that the
file does not approve. Retrain after editing the file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.answers.file import PLACEHOLDER, AnswersFile, load_answers
from gateway.answers.model import IntentModel, Prediction
from gateway.answers.training import Example, fingerprint
from gateway.embedder import Embedder

log = logging.getLogger("gateway.answers")

__all__ = ["ApprovedAnswers", "Match", "TenantAnswers"]


@dataclass(frozen=True, slots=True)
class Match:
    """An approved answer for a request: which intent, how sure, and the text to send."""

    tenant: str
    intent: str
    answer: str
    confidence: float
    placeholders: tuple[str, ...]

    def render(self, values: Mapping[str, str]) -> str:
        """The answer with ``{name}`` replaced from ``values``; missing names stay as written."""
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.answer)


@dataclass(frozen=True, slots=True)
class TenantAnswers:
    answers: AnswersFile
    model: IntentModel

    @property
    def stale(self) -> bool:
        """The model was trained on other examples than the file now holds."""
        examples = [Example(text, intent) for text, intent in self.answers.examples()]
        return bool(self.model.meta.get("fingerprint") != fingerprint(examples))

    @classmethod
    def load(
        cls, answers_path: Path, model_path: Path, *, embedder: Embedder | None = None
    ) -> TenantAnswers:
        """Read both files; raises ``AnswersFileError`` or ``ModelFileError``."""
        loaded = cls(load_answers(answers_path), IntentModel.load(model_path, embedder=embedder))
        if loaded.stale:
            log.warning(
                "%s: the model %s was trained on other examples; retrain it "
                "(gateway answers train --data %s --out %s)",
                answers_path, model_path, answers_path, model_path,
            )
        return loaded


class ApprovedAnswers:
    """Every tenant's approved answers; ``match`` is thread-safe, ``set_tenant`` swaps one
    tenant's files at once (a reload after the file or the model changed)."""

    def __init__(self, tenants: Mapping[str, TenantAnswers] | None = None) -> None:
        self._tenants: dict[str, TenantAnswers] = dict(tenants or {})
        self._lock = threading.Lock()

    def set_tenant(self, tenant: str, answers: TenantAnswers | None) -> None:
        with self._lock:
            if answers is None:
                self._tenants.pop(tenant, None)
            else:
                self._tenants[tenant] = answers

    def tenant(self, tenant: str) -> TenantAnswers | None:
        return self._tenants.get(tenant)

    def predict(self, tenant: str, last_user_text: str) -> Prediction | None:
        """The matcher's whole verdict (best intent, confidence, why it abstained) for headers
        and logs; None when the tenant has no approved answers."""
        loaded = self._tenants.get(tenant)
        return None if loaded is None else loaded.model.predict(last_user_text)

    def match(self, tenant: str, last_user_text: str) -> Match | None:
        """The approved answer for this message, or None (no answers for the tenant, no text,
        below the threshold, or an intent the file no longer has)."""
        loaded = self._tenants.get(tenant)
        if loaded is None or not last_user_text.strip():
            return None
        prediction = loaded.model.predict(last_user_text)
        if prediction.intent is None:
            return None
        approved = loaded.answers.intents.get(prediction.intent)
        if approved is None:
            return None
        return Match(
            tenant=tenant,
            intent=approved.intent,
            answer=approved.answer,
            confidence=prediction.confidence,
            placeholders=approved.placeholders,
        )
