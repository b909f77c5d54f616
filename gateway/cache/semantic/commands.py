"""The ``gateway cache`` commands: replay a stream through the semantic cache, match pairs.

* ``gateway cache replay --data FILE.jsonl``: rows ``{"text": ...}`` in order go through one
  empty semantic cache (default embedder, one tenant); a miss is stored with the row as its
  answer. One JSON line per row: ``{"hit": bool, "matched": <index of the earlier row> | null}``.
* ``gateway cache match --pairs FILE.jsonl``: for each row ``{"q1", "q2"}`` an empty cache stores
  q1 and looks up q2; one line ``{"match": bool}`` per row.

Both use the default :class:`SemanticPolicy` unless ``--threshold`` or ``--personalised`` say
otherwise, so they measure what a tenant gets without tuning. ``--explain`` adds the score and
the reason (``guard: negation``, ``below threshold (...)``) to each line.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.routing.rows import CommandError, existing_files, kind_of, read_rows

__all__ = ["add_cache_commands", "run_cache_command"]


def add_cache_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway cache replay | match``."""
    cache = sub.add_parser(
        "cache",
        help="semantic cache: replay a stream, match pairs (what it would serve)",
        description="Run rows through the semantic response cache with its default embedder "
        "and guards. See docs/caching.md.",
    )
    actions = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay",
        help='rows {"text"} in order through one empty cache; {"hit", "matched"} per row',
        description='Each row {"text": ...} is looked up in one empty cache (one tenant); a '
        "miss is stored with the row as its answer. Prints one JSON line per row: "
        '{"hit": bool, "matched": index of the earlier row served | null}.',
    )
    replay.add_argument("--data", required=True, metavar="FILE", help="JSONL rows with text")
    match = actions.add_parser(
        "match",
        help='rows {"q1", "q2"}: store q1, look up q2 in an empty cache; {"match"} per row',
        description='For each row {"q1": ..., "q2": ...}: an empty cache stores q1, then looks '
        'up q2. Prints one JSON line per row: {"match": bool}.',
    )
    match.add_argument("--pairs", required=True, metavar="FILE", help="JSONL rows with q1, q2")
    for parser in (replay, match):
        parser.add_argument(
            "--threshold",
            type=float,
            metavar="COS",
            help="similarity threshold (default: the default policy's)",
        )
        parser.add_argument(
            "--personalised",
            action="store_true",
            help="also cache texts with order numbers, amounts, e-mails (entity guard only)",
        )
        parser.add_argument(
            "--explain", action="store_true", help='add "score" and "reason" to every line'
        )


def run_cache_command(args: argparse.Namespace) -> int | None:
    if getattr(args, "command", None) != "cache":
        return None
    action = str(args.cache_command)
    run: dict[str, Callable[[argparse.Namespace], int]] = {"replay": _replay, "match": _match}
    try:
        return run[action](args)
    except CommandError as exc:
        sys.stderr.write(f"gateway cache {action}: {exc}\n")
        return 2


def _cache(args: argparse.Namespace) -> Any:
    from gateway.cache.semantic import MemorySemanticStore, SemanticCache, SemanticPolicy
    from gateway.embedder import EmbedderUnavailable, default_embedder

    policy = SemanticPolicy()
    if args.threshold is not None:
        if not 0.0 <= args.threshold <= 1.0:
            raise CommandError(f"--threshold must be a cosine in [0, 1], not {args.threshold}")
        policy = SemanticPolicy(threshold=args.threshold)
    if args.personalised:
        policy = SemanticPolicy(threshold=policy.threshold, personalised=True)
    try:
        embedder = default_embedder()
    except EmbedderUnavailable as exc:
        raise CommandError(str(exc)) from exc
    return lambda: SemanticCache(
        MemorySemanticStore(), secret=secrets.token_bytes(32), embedder=embedder, default=policy
    )


def _string(path: Path, lineno: int, row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        shown = "missing" if name not in row else kind_of(value)
        raise CommandError(f'{path}:{lineno}: "{name}" must be a string ({shown})')
    return value


def _write(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")


def _replay(args: argparse.Namespace) -> int:
    (path,) = existing_files([args.data])
    texts = [_string(path, lineno, row, "text") for lineno, row in read_rows(path)]
    cache = _cache(args)()
    for index, text in enumerate(texts):
        found = cache.lookup("replay", text)
        matched = int(found.hit.answer) if found.hit is not None else None
        line: dict[str, Any] = {"hit": found.hit is not None, "matched": matched}
        if args.explain:
            line.update(score=found.score, reason=found.reason)
        _write(line)
        if found.hit is None:
            cache.store("replay", text, str(index).encode())
    return 0


def _match(args: argparse.Namespace) -> int:
    (path,) = existing_files([args.pairs])
    pairs = [
        (_string(path, lineno, row, "q1"), _string(path, lineno, row, "q2"))
        for lineno, row in read_rows(path)
    ]
    new_cache = _cache(args)
    for q1, q2 in pairs:
        cache = new_cache()
        stored = cache.store("pairs", q1, b"q1")
        found = cache.lookup("pairs", q2)
        line: dict[str, Any] = {"match": found.hit is not None}
        if args.explain:
            line.update(
                score=found.score,
                reason=found.reason if stored is not None else "q1 not stored (policy)",
            )
        _write(line)
    return 0
