"""Promotion: a person approved an answer (or a wording of a question); put it in the file.

* :func:`promote_example` adds a customer's wording to an intent's examples, so the matcher
  learns it at the next training;
* :func:`promote_answer` adds a new intent with its approved answer and first example.

The file is rewritten through a temporary file and checked with :func:`load_answers` before it
replaces the old one: a promotion never leaves a file the gateway would refuse. Lines other
than the one changed stay byte for byte as they were. Retrain afterwards
(``gateway answers train``); until then the model is ``stale`` and serves what it knew.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gateway.answers.features import normalise
from gateway.answers.file import AnswersFileError, load_answers

__all__ = ["promote_answer", "promote_example"]


def _replace(path: Path, lines: list[str]) -> None:
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".jsonl", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        load_answers(Path(tmp))  # raises AnswersFileError, naming the temporary file
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def promote_example(path: Path, intent: str, text: str) -> bool:
    """Add ``text`` to ``intent``'s examples; False when it is one already. Raises
    ``AnswersFileError`` for an unknown intent or a file that does not load."""
    answers = load_answers(path)
    approved = answers.intents.get(intent)
    if approved is None:
        known = ", ".join(sorted(answers.intents)[:20])
        raise AnswersFileError(f"{path}: no intent {intent!r} (intents: {known})")
    if not text.strip():
        raise AnswersFileError("an example must be a non-empty string")
    key = normalise(" ".join(text.split()))
    if any(normalise(" ".join(e.split())) == key for e in approved.examples):
        return False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    row = json.loads(lines[approved.line - 1])
    row["examples"] = [*row["examples"], text]
    lines[approved.line - 1] = json.dumps(row, ensure_ascii=False) + "\n"
    _replace(path, lines)
    return True


def promote_answer(path: Path, intent: str, answer: str, example: str) -> None:
    """Add a new intent with ``answer`` and one ``example`` (the file is created if missing)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    if lines:
        answers = load_answers(path)
        if intent in answers.intents:
            raise AnswersFileError(
                f"{path}:{answers.intents[intent].line}: intent {intent!r} exists; promote the "
                "wording as an example, or edit its answer"
            )
    row = {"intent": intent, "answer": answer, "examples": [example]}
    _replace(path, [*lines, json.dumps(row, ensure_ascii=False) + "\n"])
