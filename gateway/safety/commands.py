"""The safeguard commands of ``gateway``: ``mask`` and ``handoff``.

``add_safety_commands(sub)`` adds their subparsers and ``run_safety_command(args)`` runs one
(``None``: not a safety command). Bad input becomes one message naming the file, the line and
the fix (:class:`CommandError`, printed as ``gateway <command>: ...``, exit status 2).

- ``gateway mask --jsonl IN``: rows ``{"text"}`` come back with ``"masked"`` (the text as it
  would leave for a hosted model) and ``"found": [{"type", "start", "end"}]``; with ``--eval``,
  rows ``{"text", "entities"}`` are scored instead (precision and recall per type).
- ``gateway handoff --jsonl IN``: rows ``{"text"}`` or ``{"messages"}`` come back with
  ``"handoff"``: the reason (``intent:NAME`` for a configured intent) or ``null``; with
  ``--eval``, rows with ``"labels"`` are scored per signal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from gateway.routing.rows import CommandError, kind_of, read_rows, write_atomically

COMMANDS = ("mask", "handoff")


def add_safety_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mask`` and ``handoff``."""
    mask = sub.add_parser(
        "mask",
        help="mask personal data (phones, e-mails, cards, IDs, IBANs, addresses) in JSONL rows",
        description='Read rows {"text"} and write each back with "masked" (the text as it would '
        'leave for a hosted model) and "found": [{"type", "start", "end"}]. See docs/safety.md.',
    )
    mask.add_argument("--jsonl", required=True, metavar="IN", help="JSONL rows ('-': stdin)")
    mask.add_argument("--out", default="-", metavar="OUT", help="output ('-': stdout, default)")
    mask.add_argument(
        "--types",
        metavar="T,T",
        help="only these types (default all): phone, email, card, cn_id, iban, bank_account, "
        "address",
    )
    mask.add_argument(
        "--eval",
        action="store_true",
        help='score labelled rows {"text", "entities": [{"type", "start", "end"}]}: precision '
        "and recall per type (span-exact)",
    )
    mask.add_argument("--json", action="store_true", help="with --eval: print JSON, not a table")

    handoff = sub.add_parser(
        "handoff",
        help="detect when a person should take over (request for a human, anger, legal threat, "
        "repeated question, configured intents)",
        description='Read rows {"text"} or {"messages"} and write each back with "handoff": the '
        "reason, or null. See docs/safety.md.",
    )
    handoff.add_argument("--jsonl", required=True, metavar="IN", help="JSONL rows ('-': stdin)")
    handoff.add_argument("--out", default="-", metavar="OUT", help="output ('-': stdout, default)")
    handoff.add_argument(
        "--intents",
        metavar="FILE",
        help='JSON object {"intent name": ["phrase", "refund ... denied", ...]}: replaces the '
        "shipped intents (refund_dispute, close_account); {} turns intents off",
    )
    handoff.add_argument(
        "--eval",
        action="store_true",
        help='score labelled rows (with "labels": [signal, ...]): precision and recall per signal',
    )
    handoff.add_argument("--json", action="store_true", help="with --eval: print JSON")


def run_safety_command(args: argparse.Namespace) -> int | None:
    """Run a safety command; ``None`` when ``args`` is not one."""
    command = getattr(args, "command", None)
    if command not in COMMANDS:
        return None
    run: dict[str, Callable[[argparse.Namespace], int]] = {"mask": _mask, "handoff": _handoff}
    try:
        return run[str(command)](args)
    except CommandError as exc:
        sys.stderr.write(f"gateway {command}: {exc}\n")
        return 2


# --- reading and writing -----------------------------------------------------------------------


def _rows(source: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(name, line number, row)`` of a JSONL file or stdin (``-``)."""
    if source != "-":
        path = Path(source)
        if not path.is_file():
            raise CommandError(f"no such file: {source}")
        for lineno, row in read_rows(path):
            yield source, lineno, row
        return
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"<stdin>:{lineno}: not valid JSON ({exc.msg}, column {exc.colno}); each line "
                "must be one JSON object"
            ) from exc
        if not isinstance(row, dict):
            raise CommandError(f"<stdin>:{lineno}: a row must be a JSON object, got {kind_of(row)}")
        yield "<stdin>", lineno, row


def _write(out: str, rows: list[dict[str, Any]]) -> None:
    def write(fh: IO[str]) -> None:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    if out == "-":
        write(sys.stdout)
        return
    try:
        write_atomically(Path(out), write)
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror}") from exc


# --- mask ----------------------------------------------------------------------------------------


def _mask(args: argparse.Namespace) -> int:
    from gateway.safety.entities import ENTITY_TYPES
    from gateway.safety.masking import Masker

    types = None
    if args.types:
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        unknown = [t for t in types if t not in ENTITY_TYPES]
        if unknown:
            raise CommandError(
                f"--types: unknown type(s) {', '.join(unknown)}; choose from "
                f"{', '.join(ENTITY_TYPES)}"
            )
    masker = Masker(types)
    rows: list[dict[str, Any]] = []
    for name, lineno, row in _rows(args.jsonl):
        text = row.get("text")
        if not isinstance(text, str):
            raise CommandError(
                f'{name}:{lineno}: a row needs "text" (a string), got '
                f"{kind_of(text) if 'text' in row else 'no text'}"
            )
        if args.eval:
            _check_entities(name, lineno, row)
        rows.append(row)
    if args.eval:
        return _mask_eval(rows, masker, as_json=args.json)
    for row in rows:
        masked = masker.mask(row["text"])
        row["masked"] = masked.text
        row["found"] = [{"type": f.type, "start": f.start, "end": f.end} for f in masked.found]
    _write(args.out, rows)
    return 0


def _check_entities(name: str, lineno: int, row: dict[str, Any]) -> None:
    entities = row.get("entities")
    if not isinstance(entities, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("type"), str)
        and isinstance(e.get("start"), int)
        and isinstance(e.get("end"), int)
        for e in entities
    ):
        raise CommandError(
            f'{name}:{lineno}: with --eval a row needs "entities": a list of '
            '{"type", "start", "end"} (empty when the text holds none)'
        )


def _mask_eval(rows: list[dict[str, Any]], masker: Any, *, as_json: bool) -> int:
    from gateway.safety.evaluation import MASKING_TARGETS, evaluate_masking, table

    scores = evaluate_masking(rows, masker)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    mode: {kind: score.as_dict() for kind, score in by_type.items()}
                    for mode, by_type in scores.items()
                },
                indent=2,
            )
            + "\n"
        )
        return 0
    sys.stdout.write(f"{len(rows)} rows; span-exact match:\n\n")
    sys.stdout.write(table(scores["exact"], MASKING_TARGETS) + "\n\n")
    sys.stdout.write("a found span of the right type that overlaps a labelled one:\n\n")
    sys.stdout.write(table(scores["overlap"], MASKING_TARGETS) + "\n")
    return 0


# --- handoff -------------------------------------------------------------------------------------


def _handoff(args: argparse.Namespace) -> int:
    from gateway.safety.handoff import SIGNALS, detect_handoff, messages_of

    config = _handoff_config(args.intents)
    rows: list[dict[str, Any]] = []
    for name, lineno, row in _rows(args.jsonl):
        problem = _conversation_problem(row)
        if problem:
            raise CommandError(f"{name}:{lineno}: {problem}")
        if args.eval:
            labels = row.get("labels")
            if not isinstance(labels, list) or not all(label in SIGNALS for label in labels):
                raise CommandError(
                    f'{name}:{lineno}: with --eval a row needs "labels": a list of signals '
                    f"(empty for none) from {', '.join(SIGNALS)}"
                )
        rows.append(row)
    if args.eval:
        return _handoff_eval(rows, config, as_json=args.json)
    for row in rows:
        signal = detect_handoff(messages_of(row), config)
        row["handoff"] = signal.header_value if signal else None
    _write(args.out, rows)
    return 0


def _conversation_problem(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return '"messages" must be a list of {"role", "content"} objects'
        return None
    if not isinstance(row.get("text"), str):
        return 'a row needs "text" (a string) or "messages" (a list of {"role", "content"})'
    return None


def _handoff_config(path: str | None) -> Any:
    import msgspec

    from gateway.safety.handoff import HandoffConfig

    if path is None:
        return HandoffConfig()
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"--intents {path}: cannot read: {exc.strerror}") from exc
    try:
        intents = msgspec.json.decode(raw, type=dict[str, list[str]])
        return HandoffConfig(intents=intents)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise CommandError(
            f'--intents {path}: {exc}; the file must be a JSON object {{"intent name": '
            '["phrase", ...]}}'
        ) from exc


def _handoff_eval(rows: list[dict[str, Any]], config: Any, *, as_json: bool) -> int:
    from gateway.safety.evaluation import evaluate_handoff, table

    scores = evaluate_handoff(rows, config)
    if as_json:
        sys.stdout.write(
            json.dumps({name: score.as_dict() for name, score in scores.items()}, indent=2) + "\n"
        )
        return 0
    sys.stdout.write(f"{len(rows)} rows; per signal (any: hand off or not):\n\n")
    sys.stdout.write(table(scores, {}, name="signal") + "\n")
    return 0
