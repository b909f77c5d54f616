"""The routing commands of ``gateway``: train-router, eval-router, classify, calibrate, replay.

``add_routing_commands(sub)`` adds their subparsers to the ``gateway`` parser and
``run_routing_command(args)`` runs one (``None``: not a routing command). The bodies live
elsewhere: ``training.py`` and ``evaluation.py`` (train, evaluate, classify), ``calibration.py``
and ``thresholds_yaml.py`` (calibrate), ``replay.py`` (replay); ``rows.py`` reads and checks the
user's files and turns every failure into one message naming the file, the line and the fix
(:class:`CommandError`, printed as ``gateway <command>: ...`` with exit status 2).

Nothing heavy is imported at module level: ``gateway serve`` imports this module too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING

from gateway.progress import ProgressBar
from gateway.routing.calibration import run_calibrate
from gateway.routing.rows import (
    CommandError,
    existing_files,
    labelled_rows,
    load_weights,
    write_atomically,
)

if TYPE_CHECKING:
    from gateway.routing.training import Example

__all__ = ["CommandError", "add_routing_commands", "run_routing_command"]

COMMANDS = ("train-router", "eval-router", "classify", "calibrate", "replay")
MIN_TRAINING_ROWS = 20  # training.fit refuses fewer
SKLEARN_FIX = (
    "scikit-learn is needed to train (serving never uses it); install it with "
    "`pip install 'switchboard-gateway[train]'` (or `.venv/bin/pip install scikit-learn` in a "
    "checkout)"
)


# --- the parsers ------------------------------------------------------------------------------


def add_routing_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train-router``, ``eval-router``, ``classify``, ``calibrate`` and ``replay``."""
    train = sub.add_parser(
        "train-router",
        help="retrain the difficulty classifier on your own labelled rows (needs scikit-learn)",
        description="Train the difficulty classifier on labelled JSONL rows and write a weights "
        'file. Rows: {"prompt" | "messages", "weak_correct", "strong_correct"} or '
        '{..., "weak_score", "strong_score"}. See docs/routing.md.',
    )
    train.add_argument("--data", nargs="*", default=[], metavar="FILE", help="labelled JSONL")
    train.add_argument(
        "--feedback-tenant",
        metavar="NAME",
        help="also learn from this tenant's verdicts (POST /v1/feedback) in the ledger; needs "
        "its store_request_text (docs/routing.md)",
    )
    train.add_argument(
        "--data-dir", metavar="DIR", help="with --feedback-tenant: the gateway's data directory"
    )
    train.add_argument("--out", required=True, metavar="PATH", help="weights file to write")
    train.add_argument("--version", metavar="NAME", help="version name (default router-<time>)")
    train.add_argument(
        "--score-range",
        default="1,10",
        metavar="LO,HI",
        help="scale of weak_score/strong_score (default 1,10: MT-Bench judge scores)",
    )

    evaluate = sub.add_parser(
        "eval-router",
        help="APGR and CPT of the classifier on labelled rows, beside random, length and oracle",
        description="Score labelled JSONL rows with the classifier and print APGR, CPT(50%%) and "
        "CPT(80%%) per file beside a random router, prompt length and the oracle.",
    )
    evaluate.add_argument("--data", nargs="+", required=True, metavar="FILE", help="labelled JSONL")
    evaluate.add_argument("--weights", metavar="PATH", help="weights file (default: shipped)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="resamples for the APGR interval of files under 500 rows (0: none; default 1000)",
    )

    classify = sub.add_parser(
        "classify",
        help="add the classifier's score to every JSONL row",
        description='Read rows with "prompt" or "messages" and write each back with "score" '
        "added, scored exactly as the gateway scores a request.",
    )
    classify.add_argument("--jsonl", required=True, metavar="IN", help="JSONL rows ('-': stdin)")
    classify.add_argument("--out", default="-", metavar="OUT", help="output ('-': stdout, default)")
    classify.add_argument("--weights", metavar="PATH", help="weights file (default: shipped)")
    classify.add_argument(
        "--explain", action="store_true", help='add "top_features": the features behind the score'
    )

    calibrate = sub.add_parser(
        "calibrate",
        help="per tenant, the classifier threshold that meets a large-tier share or a budget",
        description="Score traffic rows and print, per tenant, the threshold (a request goes to "
        "the large tier when its score >= threshold) that meets the target. Rows: "
        '{"prompt" | "messages", "tenant"?, "count"?, "score"?, "prompt_tokens"?, '
        '"output_tokens"?}. See docs/routing.md.',
    )
    calibrate.add_argument("--data", nargs="+", required=True, metavar="FILE", help="traffic JSONL")
    target = calibrate.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--target-large-share",
        type=float,
        metavar="SHARE",
        help="at most this share of requests (0..1) on the large tier",
    )
    target.add_argument(
        "--monthly-budget",
        type=Decimal,
        metavar="USD",
        help="each tenant's estimated spend at most this many USD per month (needs --config "
        "and --period-days)",
    )
    calibrate.add_argument(
        "--period-days",
        type=float,
        metavar="DAYS",
        help="with --monthly-budget: how many days of traffic the data holds",
    )
    calibrate.add_argument(
        "--output-tokens",
        type=int,
        default=250,
        metavar="N",
        help='with --monthly-budget: completion tokens of a row without "output_tokens" '
        "(default 250)",
    )
    calibrate.add_argument("--config", metavar="PATH", help="the gateway config (tenants, prices)")
    calibrate.add_argument("--tenant", metavar="NAME", help="only this tenant ('*': rows without)")
    calibrate.add_argument(
        "--weights",
        metavar="PATH",
        help="weights file (default: the config's router.classifier.weights, else shipped)",
    )
    calibrate.add_argument(
        "--rescore", action="store_true", help='score every row, even those that carry "score"'
    )
    calibrate.add_argument(
        "--write",
        action="store_true",
        help="write the thresholds into --config (tenants.NAME.routing_threshold; tenant '*': "
        "router.classifier.threshold)",
    )
    calibrate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    replay = sub.add_parser(
        "replay",
        help="what-if: re-decide logged (or supplied) requests under another config, no model "
        "called",
        description="Re-decide the ledger's requests (or the chat bodies in --requests) under "
        "NEW config and print the route mix and the cost beside what was recorded (or what the "
        "current config decides).",
    )
    replay.add_argument("--config", required=True, metavar="NEW", help="the config to try")
    replay.add_argument(
        "--since", help="ledger requests from this day (YYYY-MM-DD, UTC) or ISO time, inclusive"
    )
    replay.add_argument("--until", help="up to and including this day (YYYY-MM-DD) or ISO time")
    replay.add_argument("--tenant", metavar="NAME", help="only this tenant's requests")
    replay.add_argument(
        "--requests",
        metavar="FILE",
        help='chat bodies (JSONL, optional "tenant" and "completion_tokens") instead of the '
        "ledger",
    )
    replay.add_argument(
        "--against",
        metavar="CURRENT",
        help="with --requests: the config to compare with (default $SWITCHBOARD_CONFIG, else "
        "config/gateway.yaml)",
    )
    replay.add_argument("--data-dir", metavar="DIR", help="the gateway's data directory")
    replay.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_routing_command(args: argparse.Namespace) -> int | None:
    """Run a routing command; ``None`` when ``args`` is not one. A :class:`CommandError` is
    printed as ``gateway <command>: ...`` on stderr and gives exit status 2."""
    command = getattr(args, "command", None)
    if command not in COMMANDS:
        return None
    run: dict[str, Callable[[argparse.Namespace], int]] = {
        "train-router": _train_router,
        "eval-router": _eval_router,
        "classify": _classify,
        "calibrate": run_calibrate,
        "replay": _replay,
    }
    try:
        return run[str(command)](args)
    except CommandError as exc:
        sys.stderr.write(f"gateway {command}: {exc}\n")
        return 2


# --- train-router -----------------------------------------------------------------------------




def _score_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise CommandError(f"--score-range must be LO,HI (e.g. 1,10), not {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise CommandError(f"--score-range needs LO < HI, got {text!r}")
    return lo, hi


def _require_sklearn() -> None:
    try:
        importlib.import_module("sklearn")
    except ImportError:
        raise CommandError(SKLEARN_FIX) from None


def _train_router(args: argparse.Namespace) -> int:
    from gateway.routing import training

    if not args.data and not args.feedback_tenant:
        raise CommandError("give labelled rows (--data FILE...), --feedback-tenant NAME, or both")
    paths = existing_files(args.data) if args.data else []
    score_range = _score_range(args.score_range)
    examples: list[Example] = []
    for path, lineno, row in labelled_rows(paths):
        try:
            examples.append(
                training.example_from_row(
                    row, score_range=score_range, source=path.name.split(".")[0]
                )
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CommandError(f"{path}:{lineno}: {exc}") from exc
    if args.feedback_tenant:
        examples.extend(_feedback_examples(args, training.example_from_row))
    _check_trainable(examples, paths)
    _require_sklearn()

    bar = ProgressBar(sys.stderr)
    config = training.TrainConfig()
    try:
        fitted = training.fit(examples, config, progress=bar)
    except ValueError as exc:  # scikit-learn refusing these rows, e.g. one class in a fold
        raise CommandError(f"training failed on these rows: {exc}") from exc
    finally:
        bar.close()
    # train_router's document, with our progress bar (train_router only draws its own)
    document = training.to_document(
        fitted,
        config,
        version=args.version or f"router-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}",
        training={
            **training.describe(examples),
            "files": [p.name for p in paths],
            "description": "gateway train-router",
            "target": "P(strong good) and P(weak good); score = P(weak answer worse), Platt-fitted",
        },
    )
    out = Path(args.out)
    try:
        write_atomically(
            out, lambda fh: fh.write(json.dumps(document, separators=(",", ":")) + "\n")
        )
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror}") from exc
    load_weights(str(out))  # what the gateway will load must load
    worse = sum(1 for e in examples if e.weak < e.strong)
    sys.stdout.write(
        f"wrote {out} ({document['version']}): {len(examples)} rows from "
        f"{len(paths)} file(s), the weak answer worse on {worse}\n"
        f"check it on rows it did not see: gateway eval-router --data HELD_OUT.jsonl "
        f"--weights {out}\n"
        f"serve it: router.classifier.weights: {out} in the config\n"
    )
    return 0


def _feedback_examples(
    args: argparse.Namespace, example_from_row: Callable[..., Example]
) -> list[Example]:
    from gateway.routing.feedback_rows import feedback_rows
    from gateway.settings import Settings

    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
    try:
        found = feedback_rows(data_dir / "ledger.sqlite3", args.feedback_tenant)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    for why, count in sorted(found.left_out.items()):
        sys.stderr.write(f"feedback: left out {count}: {why}\n")
    sys.stderr.write(
        f"feedback: {len(found.rows)} row(s) from tenant {args.feedback_tenant!r}\n"
    )
    return [example_from_row(row, source="feedback") for row in found.rows]


def _check_trainable(examples: Sequence[Example], paths: Sequence[Path]) -> None:
    names = ", ".join(str(p) for p in paths) or "the feedback"
    if len(examples) < MIN_TRAINING_ROWS:
        raise CommandError(
            f"{len(examples)} labelled row(s) in {names}; training needs at least "
            f"{MIN_TRAINING_ROWS} (a few hundred for a router worth serving)"
        )
    for tier, values in (
        ("weak", [e.weak for e in examples]),
        ("strong", [e.strong for e in examples]),
    ):
        if all(v == values[0] for v in values) and values[0] in (0.0, 1.0):
            verdict = "right" if values[0] == 1.0 else "wrong"
            raise CommandError(
                f"the {tier} tier is {verdict} on every row of {names}: there is nothing to "
                "learn; training needs rows where each tier is sometimes right and sometimes wrong"
            )
    if not any(e.weak < e.strong for e in examples):
        raise CommandError(
            f"the weak answer is never worse than the strong one in {names}: the classifier "
            "learns when the large tier helps, so it needs rows where it does"
        )


# --- eval-router ------------------------------------------------------------------------------


def _eval_router(args: argparse.Namespace) -> int:
    from gateway.routing import evaluation

    if args.bootstrap < 0:
        raise CommandError("--bootstrap must be 0 (no interval) or more")
    paths = existing_files(args.data)
    for _ in labelled_rows(paths):  # every problem named by file and line before scoring
        pass
    classifier = load_weights(args.weights)
    reports = []
    for path in paths:
        try:
            reports.extend(
                evaluation.eval_router([path], weights=args.weights, bootstrap=args.bootstrap)
            )
        except ValueError as exc:
            raise CommandError(f"{path}: {exc}") from exc
    if args.json:
        doc = {
            "weights": {"version": classifier.version, "source": classifier.source},
            "sets": [r.as_dict() for r in reports],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    sys.stdout.write(evaluation.format_reports(reports) + "\n")
    sys.stdout.write(
        "APGR: area under the quality-gap-recovered curve, higher is better (random 0.5); "
        "CPT50/CPT80: large-tier share needed to recover 50%/80% of the gap, lower is better\n"
    )
    return 0


# --- classify ---------------------------------------------------------------------------------


def _classify(args: argparse.Namespace) -> int:
    from gateway.routing import evaluation

    load_weights(args.weights)  # a bad weights file is named as such, not as a bad row
    name = "<stdin>" if args.jsonl == "-" else args.jsonl

    def run(src: IO[str], dst: IO[str]) -> int:
        try:
            return evaluation.classify_jsonl(src, dst, weights=args.weights, explain=args.explain)
        except ValueError as exc:  # "line N: what", or undecodable input
            raise CommandError(f"{name}: {exc}") from exc

    if args.jsonl == "-":
        src_cm: IO[str] = sys.stdin
    else:
        (path,) = existing_files([args.jsonl])
        try:
            src_cm = path.open(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        if args.out == "-":
            run(src_cm, sys.stdout)
            sys.stdout.flush()
            return 0
        written = 0

        def write(fh: IO[str]) -> None:
            nonlocal written
            written = run(src_cm, fh)

        try:
            write_atomically(Path(args.out), write)
        except OSError as exc:
            raise CommandError(f"cannot write {args.out}: {exc.strerror}") from exc
        sys.stderr.write(f"classified {written} row(s) into {args.out}\n")
        return 0
    finally:
        if src_cm is not sys.stdin:
            src_cm.close()




# --- replay -----------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.ledger import LedgerError, LedgerQuery, SqliteLedger
    from gateway.reports import parse_date_bound
    from gateway.routing.replay import format_result, replay_records, replay_requests
    from gateway.settings import Settings

    try:
        new = load_config(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    bar = ProgressBar(sys.stderr)

    def progress(done: int, total: int | None) -> None:
        bar("replay", done, total if total is not None else max(done, 1))

    if args.requests:
        if args.since or args.until:
            raise CommandError("--since/--until select ledger requests; drop them with --requests")
        against_path = args.against or Settings.from_env().config_path
        try:
            against = load_config(against_path)
            result = replay_requests(
                Path(args.requests), new, against, default_tenant=args.tenant, progress=progress
            )
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            raise CommandError(f"cannot read {args.requests}: {exc.strerror}") from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
    else:
        data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
        path = data_dir / "ledger.sqlite3"
        if not path.exists():
            raise CommandError(
                f"no ledger at {path}; pass --data-dir (the gateway's data directory), or "
                "--requests FILE to replay chat bodies instead"
            )
        try:
            query = LedgerQuery(
                tenant=args.tenant,
                since=parse_date_bound(args.since) if args.since else None,
                until=parse_date_bound(args.until, end=True) if args.until else None,
            )
            ledger = SqliteLedger(path)
            try:
                total = ledger.count(query)
                result = replay_records(
                    ledger.records(query), new, total=total, progress=progress
                )
            finally:
                ledger.close()
                bar.close()
        except (LedgerError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(format_result(result) + "\n")
    return 0
