"""Reading and checking the row files the routing commands take (JSONL), and writing outputs.

Every problem becomes a :class:`CommandError` naming the file, the line and the fix; the
commands print it as ``gateway <command>: ...`` and exit with status 2.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.routing.classifier import DifficultyClassifier


class CommandError(Exception):
    """A routing command cannot go on; the message says where and what to do."""


# --- reading rows -----------------------------------------------------------------------------


def existing_files(paths: Sequence[str]) -> list[Path]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise CommandError(f"no such file: {', '.join(missing)}")
    return [Path(p) for p in paths]


def kind_of(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of a JSONL file; blank lines skipped, anything else must be an
    object."""
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from exc
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CommandError(
                        f"{path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno}); "
                        "each line must be one JSON object"
                    ) from exc
                if not isinstance(row, dict):
                    raise CommandError(
                        f"{path}:{lineno}: a row must be a JSON object, got {kind_of(row)}"
                    )
                yield lineno, row
        except UnicodeDecodeError as exc:
            raise CommandError(f"{path}: not UTF-8 text; save the file as UTF-8") from exc


def conversation_problem(row: Mapping[str, Any]) -> str | None:
    """What is wrong with a row's conversation, if anything (the rules of
    ``evaluation._messages``)."""
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list):
            return (
                '"messages" must be a list of {"role", "content"} objects, '
                f"not {kind_of(messages)}"
            )
        if not any(isinstance(m, dict) for m in messages):
            return '"messages" holds no {"role", "content"} object'
        return None
    if "prompt" in row:
        if not isinstance(row["prompt"], str):
            return f'"prompt" must be a string, not {kind_of(row["prompt"])}'
        return None
    return 'a row needs "prompt" (a string) or "messages" (a list of {"role", "content"})'


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def label_problem(row: Mapping[str, Any]) -> str | None:
    """What is wrong with a row's labels, if anything."""
    pairs = (("weak_correct", "strong_correct"), ("weak_score", "strong_score"))
    for weak, strong in pairs:
        if weak in row or strong in row:
            if weak not in row or strong not in row:
                given, missing = (weak, strong) if weak in row else (strong, weak)
                return f'"{given}" without "{missing}"'
            for name in (weak, strong):
                value = row[name]
                if name.endswith("_correct") and not (isinstance(value, bool) or value in (0, 1)):
                    return f'"{name}" must be true or false, not {json.dumps(value)}'
                if name.endswith("_score") and not is_number(value):
                    return f'"{name}" must be a number, not {json.dumps(value)}'
            return None
    return (
        'a row needs labels: "weak_correct" and "strong_correct" (true/false), or "weak_score" '
        'and "strong_score" (judge scores)'
    )


def labelled_rows(paths: Sequence[Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    for path in paths:
        for lineno, row in read_rows(path):
            problem = conversation_problem(row) or label_problem(row)
            if problem:
                raise CommandError(f"{path}:{lineno}: {problem}")
            yield path, lineno, row


def load_weights(weights: str | None) -> DifficultyClassifier:
    from gateway.routing.classifier import DifficultyClassifier

    if weights is not None and not Path(weights).is_file():
        raise CommandError(
            f"no weights file at {weights}; `gateway train-router --out PATH` writes one, and "
            "without --weights the shipped router is used"
        )
    try:
        return DifficultyClassifier.load(weights)
    except OSError as exc:
        raise CommandError(f"{weights}: cannot read: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandError(
            f"{weights}: not a weights file written by `gateway train-router` ({exc})"
        ) from exc


def write_atomically(path: Path, write: Callable[[IO[str]], object]) -> None:
    """Write through a temporary file beside ``path``, so a failure leaves no half file."""
    target = path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:  # what open() would have given it (mkstemp makes it private)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


