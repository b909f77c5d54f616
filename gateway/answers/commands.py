"""The ``gateway answers`` commands: train, match, eval, check, promote.

``add_answers_commands(sub)`` adds the ``answers`` parser to ``gateway``; ``run_answers_command
(args)`` runs one (``None``: not an answers command). Problems with the user's files are a
:class:`CommandError` naming the file and the line, printed as ``gateway answers <action>: ...``
with exit status 2. scikit-learn (``train`` extra) is imported only by ``train`` and ``eval``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from gateway.progress import ProgressBar
from gateway.routing.rows import CommandError, existing_files, kind_of, read_rows, write_atomically

__all__ = ["add_answers_commands", "run_answers_command"]

SKLEARN_FIX = (
    "scikit-learn is needed to train (serving never uses it); install it with "
    "`pip install 'switchboard-gateway[train]'` (or `.venv/bin/pip install scikit-learn` in a "
    "checkout)"
)


def add_answers_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway answers train | match | eval | check | promote``."""
    answers = sub.add_parser(
        "answers",
        help="approved answers: train the intent matcher, match, evaluate, check a file",
        description="Approved answers per intent (config/answers/TENANT.jsonl) and the matcher "
        "that picks one for a customer's message. See docs/caching.md.",
    )
    actions = answers.add_subparsers(dest="answers_command", required=True, metavar="ACTION")

    train = actions.add_parser(
        "train",
        help="train a matcher from examples; the abstain threshold is cross-validated",
        description='Train from rows {"text", "intent"} or from an answers file (lines with '
        '"intent", "answer", "examples"). The confidence threshold below which the matcher '
        "abstains is chosen by cross-validation so that at most --target-error of the answered "
        "examples are wrong, and stored in the model.",
    )
    train.add_argument("--data", nargs="+", required=True, metavar="FILE", help="JSONL")
    train.add_argument("--out", required=True, metavar="PATH", help="model file to write (.npz)")
    train.add_argument(
        "--target-error",
        type=float,
        default=0.01,
        metavar="SHARE",
        help="largest share of wrong answers among those given (default 0.01)",
    )

    match = actions.add_parser(
        "match",
        help='add "intent" (null: abstained) to every JSONL row with "text"',
        description='Read rows with "text" and write each back with "intent" added: the '
        "matched intent, or null when the matcher abstains.",
    )
    match.add_argument("--model", required=True, metavar="PATH", help="model file")
    match.add_argument("--jsonl", required=True, metavar="IN", help="JSONL rows ('-': stdin)")
    match.add_argument("--out", default="-", metavar="OUT", help="output ('-': stdout, default)")

    evaluate = actions.add_parser(
        "eval",
        help="train on one file, print coverage and error on another",
        description="Train on --train as `answers train` does, then match every row of --test "
        "and print coverage (share answered), error (share of answered that are wrong) and the "
        "match latency.",
    )
    evaluate.add_argument("--train", required=True, metavar="FILE", help="training rows")
    evaluate.add_argument("--test", required=True, metavar="FILE", help='rows with "intent"')
    evaluate.add_argument("--target-error", type=float, default=0.01, metavar="SHARE")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of text")

    check = actions.add_parser("check", help="validate an answers file")
    check.add_argument("path", help="the answers file (JSONL)")

    promote = actions.add_parser(
        "promote",
        help="add an approved wording to an intent, or a new intent with its answer",
        description="A person approved an answer: add --example to --intent's examples, or, "
        "with --answer, a new intent. The file is checked before it replaces the old one; "
        "retrain afterwards (`gateway answers train`). Over HTTP: POST "
        "/admin/answers/{tenant}/promote.",
    )
    promote.add_argument("--file", required=True, metavar="PATH", help="the answers file")
    promote.add_argument("--intent", required=True, help="the intent's name")
    promote.add_argument("--example", required=True, help="the customer's wording")
    promote.add_argument("--answer", help="the approved answer of a new intent")


def run_answers_command(args: argparse.Namespace) -> int | None:
    if getattr(args, "command", None) != "answers":
        return None
    action = str(args.answers_command)
    run: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": _train,
        "match": _match,
        "eval": _eval,
        "check": _check,
        "promote": _promote,
    }
    try:
        return run[action](args)
    except CommandError as exc:
        sys.stderr.write(f"gateway answers {action}: {exc}\n")
        return 2


# --- reading examples ---------------------------------------------------------------------------


def _require_sklearn() -> None:
    try:
        importlib.import_module("sklearn")
    except ImportError:
        raise CommandError(SKLEARN_FIX) from None


def _text_of(path: Path, lineno: int, row: dict[str, Any]) -> str:
    text = row.get("text")
    if not isinstance(text, str):
        shown = "missing" if "text" not in row else kind_of(text)
        raise CommandError(f'{path}:{lineno}: "text" must be a string ({shown})')
    return text


def read_examples(paths: Sequence[Path]) -> list[Any]:
    """Training examples from rows ``{"text", "intent"}`` or from answers files."""
    from gateway.answers.file import AnswersFileError, load_answers
    from gateway.answers.training import Example

    examples: list[Example] = []
    for path in paths:
        rows = list(read_rows(path))
        if rows and any("examples" in row or "placeholders" in row for _, row in rows):
            try:
                answers = load_answers(path)
            except AnswersFileError as exc:
                raise CommandError(str(exc)) from exc
            examples.extend(Example(text, intent) for text, intent in answers.examples())
            continue
        for lineno, row in rows:
            text = _text_of(path, lineno, row)
            intent = row.get("intent")
            if not isinstance(intent, str) or not intent:
                raise CommandError(
                    f'{path}:{lineno}: "intent" must be a non-empty string; a training row is '
                    '{"text": ..., "intent": ...}'
                )
            examples.append(Example(text, intent))
    if not examples:
        raise CommandError(f"no examples in {', '.join(str(p) for p in paths)}")
    return examples


def _fit(examples: list[Any], target_error: float) -> Any:
    from gateway.answers.training import TrainingError, train

    if not 0.0 <= target_error < 1.0 or not math.isfinite(target_error):
        raise CommandError(
            f"--target-error must be a share in [0, 1), e.g. 0.01, not {target_error}"
        )
    _require_sklearn()
    bar = ProgressBar(sys.stderr)
    try:
        return train(examples, target_error=target_error, progress=bar)
    except TrainingError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        bar.close()


# --- train ---------------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from gateway.answers.model import IntentModel, ModelFileError

    examples = read_examples(existing_files(args.data))
    model = _fit(examples, args.target_error)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        model.save(tmp)
        tmp.replace(out)
        IntentModel.load(out)  # what the gateway will load must load
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror}") from exc
    except ModelFileError as exc:
        raise CommandError(str(exc)) from exc
    cv = model.meta["cv"]
    sys.stdout.write(
        f"wrote {out}: {len(model.classes)} intents, {len(examples)} examples; abstains below "
        f"confidence {model.threshold:.3f}, chosen by {cv['folds']}-fold cross-validation: "
        f"coverage {cv['coverage']:.1%} at error {cv['error']:.2%} (target "
        f"{args.target_error:.2%})\n"
        f"check it on rows it did not see: gateway answers eval --train TRAIN --test HELD_OUT\n"
    )
    return 0


# --- match ---------------------------------------------------------------------------------------


def _load_model(path: str) -> Any:
    from gateway.answers.model import IntentModel, ModelFileError

    if not Path(path).is_file():
        raise CommandError(
            f"no model file at {path}; `gateway answers train --out PATH` writes one"
        )
    try:
        return IntentModel.load(Path(path))
    except ModelFileError as exc:
        raise CommandError(str(exc)) from exc


def _match(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    if args.jsonl == "-":
        source = Path("/dev/stdin")
        name = "<stdin>"
    else:
        (source,) = existing_files([args.jsonl])
        name = str(source)
    rows = []
    for lineno, row in read_rows(source):
        try:
            text = _text_of(source, lineno, row)
        except CommandError as exc:
            raise CommandError(str(exc).replace(str(source), name, 1)) from None
        rows.append({**row, "intent": model.predict(text).intent})

    def write(fh: IO[str]) -> None:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    if args.out == "-":
        write(sys.stdout)
    else:
        try:
            write_atomically(Path(args.out), write)
        except OSError as exc:
            raise CommandError(f"cannot write {args.out}: {exc.strerror}") from exc
    return 0


# --- eval ----------------------------------------------------------------------------------------


def evaluate(model: Any, rows: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Coverage, error and latency of ``model`` on ``(text, intent)`` rows."""
    answered = wrong = 0
    latencies = []
    for text, intent in rows:
        started = time.perf_counter()
        predicted = model.predict(text).intent
        latencies.append(time.perf_counter() - started)
        if predicted is not None:
            answered += 1
            wrong += predicted != intent
    latencies.sort()
    return {
        "rows": len(rows),
        "answered": answered,
        "wrong": wrong,
        "coverage": answered / len(rows) if rows else 0.0,
        "error": wrong / answered if answered else 0.0,
        "threshold": model.threshold,
        "latency_ms_p50": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        "latency_ms_p99": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
    }


def _eval(args: argparse.Namespace) -> int:
    train_path, test_path = existing_files([args.train, args.test])
    examples = read_examples([train_path])
    test_rows = []
    for lineno, row in read_rows(test_path):
        intent = row.get("intent")
        if not isinstance(intent, str):
            raise CommandError(f'{test_path}:{lineno}: a test row needs "intent" (a string)')
        test_rows.append((_text_of(test_path, lineno, row), intent))
    if not test_rows:
        raise CommandError(f"{test_path}: no rows")
    model = _fit(examples, args.target_error)
    result = evaluate(model, test_rows)
    result["cv"] = model.meta["cv"]
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0
    sys.stdout.write(
        f"coverage {result['coverage']:.1%} ({result['answered']} of {result['rows']} answered)\n"
        f"error    {result['error']:.2%} ({result['wrong']} answered with the wrong intent)\n"
        f"threshold {result['threshold']:.3f} (cross-validated for error <= "
        f"{args.target_error:.2%}); match latency p50 {result['latency_ms_p50']:.3f} ms, "
        f"p99 {result['latency_ms_p99']:.3f} ms\n"
    )
    return 0


# --- check ---------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from gateway.answers.file import AnswersFileError, load_answers

    try:
        answers = load_answers(Path(args.path))
    except AnswersFileError as exc:
        raise CommandError(str(exc)) from exc
    examples = sum(len(a.examples) for a in answers.intents.values())
    sys.stdout.write(
        f"{args.path}: ok: {len(answers.intents)} intents, {examples} examples, placeholders: "
        f"{', '.join(sorted(answers.placeholders)) or 'none'}\n"
    )
    return 0


# --- promote -------------------------------------------------------------------------------------


def _promote(args: argparse.Namespace) -> int:
    from gateway.answers.file import AnswersFileError
    from gateway.answers.promote import promote_answer, promote_example

    path = Path(args.file)
    try:
        if args.answer is None:
            added = promote_example(path, args.intent, args.example)
        else:
            promote_answer(path, args.intent, args.answer, args.example)
            added = True
    except AnswersFileError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
    what = "new intent" if args.answer is not None else "example"
    sys.stdout.write(
        f"{path}: {what} {'added to' if added else 'already in'} {args.intent!r}; retrain: "
        f"gateway answers train --data {path} --out MODEL\n"
    )
    return 0
