"""A tenant's approved answers as the gateway loads them from its config.

``check_answers`` runs at config load (``gateway.config``, ``gateway config check``, every
reload): the answers file must load (a duplicate intent, empty examples, an unknown placeholder
are named with the file and line), the configured ``values`` must be placeholders the file
declares, and the model must exist. ``load_approved_answers`` then reads the models, once per
runtime. The gateway does not train at load: training needs scikit-learn and takes seconds to
minutes, so a missing model is an error that names ``gateway answers train``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from gateway.answers.config import TenantAnswersConfig
from gateway.answers.file import AnswersFileError, load_answers
from gateway.answers.matcher import ApprovedAnswers, TenantAnswers
from gateway.answers.model import ModelFileError
from gateway.embedder import Embedder

log = logging.getLogger("gateway.answers")

__all__ = ["AnswersConfigError", "check_answers", "load_approved_answers"]


class AnswersConfigError(ValueError):
    """A tenant's answers cannot be served; ``field`` is the config key at fault (``file``,
    ``model``, ``values``), the message says what to do."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _train_hint(cfg: TenantAnswersConfig) -> str:
    return f"gateway answers train --data {cfg.file} --out {cfg.model}"


def check_answers(cfg: TenantAnswersConfig) -> None:
    """Check the answers file, the ``values`` and that the model exists; raises
    :class:`AnswersConfigError`."""
    try:
        answers = load_answers(Path(cfg.file).expanduser())
    except AnswersFileError as exc:
        raise AnswersConfigError("file", str(exc)) from None
    unknown = sorted(set(cfg.values) - answers.placeholders)
    if unknown:
        declared = ", ".join(sorted(answers.placeholders)) or "none"
        raise AnswersConfigError(
            "values",
            f"{', '.join(unknown)} is not a placeholder of {cfg.file} (declared: {declared}); "
            'fix the name or add it to the file\'s "placeholders" line',
        )
    model = Path(cfg.model).expanduser()
    if not model.is_file():
        raise AnswersConfigError(
            "model",
            f"{cfg.model} does not exist; train it from the answers file: {_train_hint(cfg)}",
        )


def load_tenant_answers(
    cfg: TenantAnswersConfig, *, embedder: Embedder | None = None
) -> TenantAnswers:
    """Both files of one tenant; raises :class:`AnswersConfigError`."""
    check_answers(cfg)
    try:
        return TenantAnswers.load(
            Path(cfg.file).expanduser(), Path(cfg.model).expanduser(), embedder=embedder
        )
    except AnswersFileError as exc:
        raise AnswersConfigError("file", str(exc)) from None
    except ModelFileError as exc:
        raise AnswersConfigError("model", f"{exc}; retrain it: {_train_hint(cfg)}") from None


def load_approved_answers(
    tenants: Mapping[str, TenantAnswersConfig], *, embedder: Embedder | None = None
) -> ApprovedAnswers:
    """Every opted-in tenant's answers; raises :class:`AnswersConfigError` with ``field``
    prefixed by the tenant's config path."""
    loaded: dict[str, TenantAnswers] = {}
    for tenant, cfg in tenants.items():
        try:
            loaded[tenant] = load_tenant_answers(cfg, embedder=embedder)
        except AnswersConfigError as exc:
            raise AnswersConfigError(f"$.tenants.{tenant}.answers.{exc.field}", str(exc)) from None
    return ApprovedAnswers(loaded)
