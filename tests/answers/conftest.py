"""A matcher trained once per session on the shipped example answers file (about 1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.answers.file import load_answers
from gateway.answers.model import IntentModel
from gateway.answers.training import Example, train

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "answers" / "example.jsonl"


@pytest.fixture(scope="session")
def example_file() -> Path:
    return EXAMPLE


@pytest.fixture(scope="session")
def example_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example file's matcher, saved: tests load it like the gateway does."""
    pytest.importorskip("sklearn")
    answers = load_answers(EXAMPLE)
    model = train([Example(text, intent) for text, intent in answers.examples()])
    path = tmp_path_factory.mktemp("answers") / "example.npz"
    model.save(path)
    return path


@pytest.fixture
def model(example_model: Path) -> IntentModel:
    return IntentModel.load(example_model)
