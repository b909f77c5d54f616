"""The routing commands of ``gateway``: train-router, eval-router, classify, calibrate.

``add_routing_commands(sub)`` adds their subparsers to the ``gateway`` parser and
``run_routing_command(args)`` runs one (``None``: not a routing command). The bodies live in
``training.py`` and ``evaluation.py``; this module reads and checks the user's files, turns every
failure into one message naming the file, the line and the fix (:class:`CommandError`, printed as
``gateway <command>: ...`` with exit status 2), and draws the training progress bar.

``calibrate`` is the one command whose logic lives here: it picks, per tenant, the classifier
threshold that meets a large-tier share or a monthly budget (:func:`calibrate_share`,
:func:`calibrate_budget`) and can write it into the config file (:func:`write_thresholds`, a
line-based edit that keeps the file's comments and layout; pyyaml cannot round-trip them).

Nothing heavy is imported at module level: ``gateway serve`` imports this module too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gateway.config import ConfigError, LoadedConfig, load_config

if TYPE_CHECKING:
    from gateway.routing.classifier import DifficultyClassifier
    from gateway.routing.training import Example

__all__ = [
    "ANY_TENANT",
    "Calibration",
    "CommandError",
    "ProgressBar",
    "add_routing_commands",
    "calibrate_budget",
    "calibrate_share",
    "run_routing_command",
    "set_yaml_value",
    "write_thresholds",
]

COMMANDS = ("train-router", "eval-router", "classify", "calibrate")
#: The tenant of traffic rows without a ``"tenant"``; its threshold is the gateway-wide one.
ANY_TENANT = "*"
MIN_TRAINING_ROWS = 20  # training.fit refuses fewer
DAYS_PER_MONTH = 30
SKLEARN_FIX = (
    "scikit-learn is needed to train (serving never uses it); install it with "
    "`pip install 'switchboard-gateway[train]'` (or `.venv/bin/pip install scikit-learn` in a "
    "checkout)"
)


class CommandError(Exception):
    """A routing command cannot go on; the message says where and what to do."""


# --- the parsers ------------------------------------------------------------------------------


def add_routing_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train-router``, ``eval-router``, ``classify`` and ``calibrate`` to ``gateway``."""
    train = sub.add_parser(
        "train-router",
        help="retrain the difficulty classifier on your own labelled rows (needs scikit-learn)",
        description="Train the difficulty classifier on labelled JSONL rows and write a weights "
        'file. Rows: {"prompt" | "messages", "weak_correct", "strong_correct"} or '
        '{..., "weak_score", "strong_score"}. See docs/routing.md.',
    )
    train.add_argument("--data", nargs="+", required=True, metavar="FILE", help="labelled JSONL")
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
        "calibrate": _calibrate,
    }
    try:
        return run[str(command)](args)
    except CommandError as exc:
        sys.stderr.write(f"gateway {command}: {exc}\n")
        return 2


# --- reading rows -----------------------------------------------------------------------------


def _existing(paths: Sequence[str]) -> list[Path]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise CommandError(f"no such file: {', '.join(missing)}")
    return [Path(p) for p in paths]


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
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
                        f"{path}:{lineno}: a row must be a JSON object, got {_kind(row)}"
                    )
                yield lineno, row
        except UnicodeDecodeError as exc:
            raise CommandError(f"{path}: not UTF-8 text; save the file as UTF-8") from exc


def _conversation_problem(row: Mapping[str, Any]) -> str | None:
    """What is wrong with a row's conversation, if anything (the rules of
    ``evaluation._messages``)."""
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list):
            return (
                f'"messages" must be a list of {{"role", "content"}} objects, not {_kind(messages)}'
            )
        if not any(isinstance(m, dict) for m in messages):
            return '"messages" holds no {"role", "content"} object'
        return None
    if "prompt" in row:
        if not isinstance(row["prompt"], str):
            return f'"prompt" must be a string, not {_kind(row["prompt"])}'
        return None
    return 'a row needs "prompt" (a string) or "messages" (a list of {"role", "content"})'


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _label_problem(row: Mapping[str, Any]) -> str | None:
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
                if name.endswith("_score") and not _number(value):
                    return f'"{name}" must be a number, not {json.dumps(value)}'
            return None
    return (
        'a row needs labels: "weak_correct" and "strong_correct" (true/false), or "weak_score" '
        'and "strong_score" (judge scores)'
    )


def _labelled_rows(paths: Sequence[Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    for path in paths:
        for lineno, row in _rows(path):
            problem = _conversation_problem(row) or _label_problem(row)
            if problem:
                raise CommandError(f"{path}:{lineno}: {problem}")
            yield path, lineno, row


def _classifier(weights: str | None) -> DifficultyClassifier:
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


def _write_atomically(path: Path, write: Callable[[IO[str]], object]) -> None:
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


# --- train-router -----------------------------------------------------------------------------


class ProgressBar:
    """A ``training.Progress`` callback for stderr: one redrawn ``\\r`` line per stage on a
    terminal; on anything else (a log, CI) a plain line at the start of a stage, every 10% and at
    its end."""

    LABELS = {"features": "features", "fit": "fitting", "calibrate": "calibrating", "cv": "cv"}

    def __init__(
        self,
        stream: IO[str],
        *,
        tty: bool | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.width = width
        self.clock = clock
        self._stage: str | None = None
        self._open = False  # a \r line is drawn and not yet ended
        self._last_decile = -1
        self._start = clock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        label = self.LABELS.get(stage, stage)
        total = max(total, 1)
        done = min(max(done, 0), total)
        if stage != self._stage:
            if self._open:
                self.stream.write("\n")
                self._open = False
            self._stage = stage
            self._last_decile = -1
        elapsed = self.clock() - self._start
        if self.tty:
            filled = self.width * done // total
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(
                f"\r{label:>11} [{bar}] {done}/{total} {done / total:4.0%} {elapsed:5.1f}s"
            )
            self._open = done < total
            if done >= total:
                self.stream.write("\n")
        else:
            decile = 10 * done // total
            if decile > self._last_decile or done >= total:
                if done < total or self._last_decile < 10:
                    self.stream.write(
                        f"{label}: {done}/{total} ({done / total:.0%}, {elapsed:.1f}s)\n"
                    )
                self._last_decile = 10 if done >= total else decile
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


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

    paths = _existing(args.data)
    score_range = _score_range(args.score_range)
    examples: list[Example] = []
    for path, lineno, row in _labelled_rows(paths):
        try:
            examples.append(
                training.example_from_row(
                    row, score_range=score_range, source=path.name.split(".")[0]
                )
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CommandError(f"{path}:{lineno}: {exc}") from exc
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
        _write_atomically(
            out, lambda fh: fh.write(json.dumps(document, separators=(",", ":")) + "\n")
        )
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror}") from exc
    _classifier(str(out))  # what the gateway will load must load
    worse = sum(1 for e in examples if e.weak < e.strong)
    sys.stdout.write(
        f"wrote {out} ({document['version']}): {len(examples)} rows from "
        f"{len(paths)} file(s), the weak answer worse on {worse}\n"
        f"check it on rows it did not see: gateway eval-router --data HELD_OUT.jsonl "
        f"--weights {out}\n"
        f"serve it: router.classifier.weights: {out} in the config\n"
    )
    return 0


def _check_trainable(examples: Sequence[Example], paths: Sequence[Path]) -> None:
    names = ", ".join(str(p) for p in paths)
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
    paths = _existing(args.data)
    for _ in _labelled_rows(paths):  # every problem named by file and line before scoring
        pass
    classifier = _classifier(args.weights)
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

    _classifier(args.weights)  # a bad weights file is named as such, not as a bad row
    name = "<stdin>" if args.jsonl == "-" else args.jsonl

    def run(src: IO[str], dst: IO[str]) -> int:
        try:
            return evaluation.classify_jsonl(src, dst, weights=args.weights, explain=args.explain)
        except ValueError as exc:  # "line N: what", or undecodable input
            raise CommandError(f"{name}: {exc}") from exc

    if args.jsonl == "-":
        src_cm: IO[str] = sys.stdin
    else:
        (path,) = _existing([args.jsonl])
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
            _write_atomically(Path(args.out), write)
        except OSError as exc:
            raise CommandError(f"cannot write {args.out}: {exc.strerror}") from exc
        sys.stderr.write(f"classified {written} row(s) into {args.out}\n")
        return 0
    finally:
        if src_cm is not sys.stdin:
            src_cm.close()


# --- calibrate: choosing a threshold ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Calibration:
    """One tenant's threshold: requests scoring >= ``threshold`` go to the large tier."""

    tenant: str
    rows: int
    requests: float  # rows weighted by "count" (budget mode: requests per month)
    threshold: float
    large_share: float  # of requests, on the calibration data, at ``threshold``
    met: bool  # False: even the strictest threshold misses the target
    monthly_usd: Decimal | None = None  # budget mode: estimated spend at ``threshold``
    all_small_usd: Decimal | None = None
    all_large_usd: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tenant": self.tenant,
            "rows": self.rows,
            "requests": self.requests,
            "threshold": self.threshold,
            "large_share": round(self.large_share, 6),
            "met": self.met,
        }
        for key in ("monthly_usd", "all_small_usd", "all_large_usd"):
            value = getattr(self, key)
            if value is not None:
                out[key] = float(round(value, 6))
        return out


def _groups(scores: Sequence[float]) -> list[tuple[float, list[int]]]:
    """Rows grouped by score, highest first: the cut points a threshold can fall between."""
    by_score: dict[float, list[int]] = {}
    for i, s in enumerate(scores):
        by_score.setdefault(s, []).append(i)
    return sorted(by_score.items(), key=lambda kv: -kv[0])


def _between(low: float | None, high: float | None) -> float:
    """A short decimal ``t`` in [0, 1] with ``low < t <= high`` (None: unbounded) near the
    middle, so thresholds read well and do not sit on a data point."""
    if low is None:  # everything goes large
        return 0.0
    if high is None:  # nothing goes large: above the highest score, if a threshold can be
        high = 1.0
        if low >= 1.0:
            return 1.0
    mid = (low + high) / 2
    for digits in range(1, 13):
        t = round(mid, digits)
        if low < t < high:
            return t
    return high


def _choose(
    tenant: str,
    scores: Sequence[float],
    weights: Sequence[float],
    fits: Callable[[int, float], bool],
) -> tuple[float, float, bool]:
    """The lowest threshold whose large set, the top ``k`` groups of equal scores holding the
    weighted share ``s`` of requests, satisfies ``fits(k, s)``: ``(threshold, share, met)``.

    ``fits`` must hold for every smaller ``k`` where it holds for ``k`` (a cap); when it holds
    for none, the threshold sends nothing large (``met`` False)."""
    groups = _groups(scores)
    total = math.fsum(weights)
    if total <= 0:
        raise CommandError(f"tenant {tenant}: no requests to calibrate on")
    shares = [0.0]
    cum = 0.0
    for _, members in groups:
        cum += math.fsum(weights[i] for i in members)
        shares.append(cum / total)
    fitting = [k for k in range(len(groups) + 1) if fits(k, shares[k])]
    k = max(fitting, default=0)
    high = groups[k - 1][0] if k > 0 else None
    low = groups[k][0] if k < len(groups) else None
    threshold = _between(low, high)
    # a score of exactly 1.0 cannot be kept off the large tier by a threshold in [0, 1]
    share = math.fsum(w for s, w in zip(scores, weights, strict=True) if s >= threshold) / total
    return threshold, share, bool(fitting) and math.isclose(share, shares[k], abs_tol=1e-12)


def calibrate_share(
    tenant: str, scores: Sequence[float], weights: Sequence[float], target: float
) -> Calibration:
    """The lowest threshold that sends at most ``target`` of the (weighted) requests large."""
    threshold, share, met = _choose(tenant, scores, weights, lambda _k, s: s <= target + 1e-12)
    return Calibration(tenant, len(scores), math.fsum(weights), threshold, share, met)


def calibrate_budget(
    tenant: str,
    scores: Sequence[float],
    weights: Sequence[float],
    small_usd: Sequence[Decimal],
    large_usd: Sequence[Decimal],
    budget: Decimal,
) -> Calibration:
    """The lowest threshold whose estimated monthly spend is at most ``budget``.

    ``weights[i]`` is row ``i``'s requests per month; ``small_usd``/``large_usd`` one request's
    cost on each tier.
    """
    groups = _groups(scores)
    w = [Decimal(repr(x)) for x in weights]
    base = sum((w[i] * small_usd[i] for i in range(len(scores))), Decimal(0))
    costs = [base]
    for _, members in groups:
        costs.append(
            costs[-1] + sum((w[i] * (large_usd[i] - small_usd[i]) for i in members), Decimal(0))
        )
    threshold, share, met = _choose(tenant, scores, weights, lambda k, _s: costs[k] <= budget)
    spent = sum(
        (
            w[i] * (large_usd[i] if scores[i] >= threshold else small_usd[i])
            for i in range(len(scores))
        ),
        Decimal(0),
    )
    return Calibration(
        tenant,
        len(scores),
        math.fsum(weights),
        threshold,
        share,
        met and spent <= budget,
        monthly_usd=spent,
        all_small_usd=base,
        all_large_usd=costs[-1],
    )


# --- calibrate: the command -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Traffic:
    tenant: str
    messages: list[dict[str, Any]]
    tools: bool
    count: float
    score: float | None
    prompt_tokens: int | None
    output_tokens: int | None


def _traffic_row(row: Mapping[str, Any]) -> _Traffic | str:
    """A traffic row, or what is wrong with it."""
    problem = _conversation_problem(row)
    if problem:
        return problem
    tenant = row.get("tenant", ANY_TENANT)
    if not isinstance(tenant, str) or not tenant:
        return f'"tenant" must be a non-empty string, not {json.dumps(tenant)}'
    count = row.get("count", 1)
    if not _number(count) or count <= 0:
        return (
            f'"count" (requests this row stands for) must be a number > 0, not {json.dumps(count)}'
        )
    score = row.get("score")
    if score is not None and not (_number(score) and 0.0 <= score <= 1.0):
        return f'"score" must be a number in [0, 1], not {json.dumps(score)}'
    tokens: dict[str, int | None] = {}
    for key in ("prompt_tokens", "output_tokens"):
        value = row.get(key)
        if value is not None and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            return f'"{key}" must be a whole number >= 0, not {json.dumps(value)}'
        tokens[key] = value
    if "messages" in row:
        messages = [m for m in row["messages"] if isinstance(m, dict)]
    else:
        messages = [{"role": "user", "content": row["prompt"]}]
    return _Traffic(
        tenant=tenant,
        messages=messages,
        tools=bool(row.get("tools", False)),
        count=float(count),
        score=float(score) if score is not None else None,
        prompt_tokens=tokens["prompt_tokens"],
        output_tokens=tokens["output_tokens"],
    )


def _read_traffic(paths: Sequence[Path], tenant: str | None) -> list[_Traffic]:
    out = []
    for path in paths:
        for lineno, row in _rows(path):
            parsed = _traffic_row(row)
            if isinstance(parsed, str):
                raise CommandError(f"{path}:{lineno}: {parsed}")
            if tenant is None or parsed.tenant == tenant:
                out.append(parsed)
    if not out:
        which = f" of tenant {tenant!r}" if tenant is not None else ""
        raise CommandError(f"no rows{which} in {', '.join(map(str, paths))}")
    return out


def _check_calibrate_args(args: argparse.Namespace) -> None:
    if args.target_large_share is not None and not 0.0 <= args.target_large_share <= 1.0:
        raise CommandError(
            f"--target-large-share is a share of requests in [0, 1] (0.3 = 30%), not "
            f"{args.target_large_share}"
        )
    if args.monthly_budget is not None:
        if not args.monthly_budget.is_finite() or args.monthly_budget < 0:
            raise CommandError(f"--monthly-budget must be USD >= 0, not {args.monthly_budget}")
        if args.config is None:
            raise CommandError(
                "--monthly-budget needs --config PATH: the tiers' prices come from it"
            )
        if args.period_days is None or not args.period_days > 0:
            raise CommandError(
                "--monthly-budget needs --period-days DAYS > 0: how many days of traffic the data "
                "holds, to turn its volumes into requests per month"
            )
        if args.output_tokens < 0:
            raise CommandError("--output-tokens must be 0 or more")
    if args.write and args.config is None:
        raise CommandError(
            "--write needs --config PATH: the config file to write the thresholds into"
        )


def _config_weights(loaded: LoadedConfig | None) -> str | None:
    """``router.classifier.weights`` of the config, if it sets one."""
    if loaded is None:
        return None
    classifier = getattr(loaded.config.router, "classifier", None)
    weights = getattr(classifier, "weights", None)
    return str(Path(weights).expanduser()) if isinstance(weights, str) and weights else None


def _costs(
    rows: Sequence[_Traffic], loaded: LoadedConfig, output_tokens: int
) -> tuple[list[Decimal], list[Decimal]]:
    """One request's estimated cost on the small and on the large tier, per row."""
    from gateway.tokens import TokenCounter

    tiers = loaded.config.tiers.configured()
    if set(tiers) != {"small", "large"}:
        raise CommandError(
            f"{loaded.source}: calibrating needs both tiers configured; it has only "
            f"{', '.join(tiers)}"
        )
    counter = TokenCounter()
    per_tier: dict[str, list[Decimal]] = {}
    for tier in ("small", "large"):
        price = loaded.tier_price(tier)
        model = loaded.model_of(tier)
        costs = []
        for row in rows:
            prompt = row.prompt_tokens
            if prompt is None:
                prompt = counter.count_messages(row.messages, model)
            out = row.output_tokens if row.output_tokens is not None else output_tokens
            costs.append(prompt * price.input_per_token + out * price.output_per_token)
        per_tier[tier] = costs
    return per_tier["small"], per_tier["large"]


def _calibrate(args: argparse.Namespace) -> int:
    _check_calibrate_args(args)
    paths = _existing(args.data)
    loaded: LoadedConfig | None = None
    if args.config is not None:
        try:
            loaded = load_config(args.config)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
    rows = _read_traffic(paths, args.tenant)

    tenants = sorted({r.tenant for r in rows}, key=lambda t: (t == ANY_TENANT, t))
    if loaded is not None:
        unknown = [t for t in tenants if t != ANY_TENANT and t not in loaded.config.tenants]
        if unknown:
            message = (
                f"tenant(s) in the data but not in {args.config}: {', '.join(unknown)} "
                f"(its tenants: {', '.join(loaded.config.tenants)})"
            )
            if args.write:
                raise CommandError(message + "; nothing was written")
            sys.stderr.write(f"gateway calibrate: warning: {message}\n")

    weights = args.weights if args.weights is not None else _config_weights(loaded)
    if any(r.score is None for r in rows) or args.rescore:
        classifier = _classifier(weights)
        scores = [
            r.score
            if r.score is not None and not args.rescore
            else classifier.score(r.messages, r.tools, top=0).score
            for r in rows
        ]
    else:
        scores = [r.score for r in rows if r.score is not None]

    results: list[Calibration] = []
    if args.monthly_budget is not None:
        if loaded is None:  # pragma: no cover - _check_calibrate_args requires --config
            raise CommandError("--monthly-budget needs --config PATH")
        small, large = _costs(rows, loaded, args.output_tokens)
        per_month = DAYS_PER_MONTH / args.period_days
        for tenant in tenants:
            idx = [i for i, r in enumerate(rows) if r.tenant == tenant]
            results.append(
                calibrate_budget(
                    tenant,
                    [scores[i] for i in idx],
                    [rows[i].count * per_month for i in idx],
                    [small[i] for i in idx],
                    [large[i] for i in idx],
                    args.monthly_budget,
                )
            )
    else:
        for tenant in tenants:
            idx = [i for i, r in enumerate(rows) if r.tenant == tenant]
            results.append(
                calibrate_share(
                    tenant,
                    [scores[i] for i in idx],
                    [rows[i].count for i in idx],
                    args.target_large_share,
                )
            )

    if args.json:
        sys.stdout.write(
            json.dumps({"calibrations": [c.as_dict() for c in results]}, indent=2) + "\n"
        )
    else:
        sys.stdout.write(_format_calibrations(results, args) + "\n")
    for c in results:
        if not c.met:
            sys.stderr.write(
                f"gateway calibrate: warning: tenant {c.tenant}: no threshold meets the target; "
                f"{c.threshold} is the strictest (large share {c.large_share:.1%})\n"
            )
    if args.write:
        target = (
            f"at most {args.target_large_share:.1%} large"
            if args.target_large_share is not None
            else f"USD {args.monthly_budget}/month"
        )
        note = (
            f"gateway calibrate {datetime.now(UTC).date().isoformat()}: {target} on "
            f"{', '.join(p.name for p in paths)}"
        )
        write_thresholds(Path(args.config), {c.tenant: c.threshold for c in results}, note=note)
        keys = ", ".join(_threshold_key(c.tenant) for c in results)
        sys.stderr.write(f"wrote {keys} into {args.config}\n")
        if loaded is not None and getattr(loaded.config.router, "classifier", None) is None:
            sys.stderr.write(
                "note: router.classifier was not set, so the classifier was off"
                + (
                    "; writing router.classifier.threshold turned it on\n"
                    if any(c.tenant == ANY_TENANT for c in results)
                    else "; these thresholds apply once it is set (router: classifier: {})\n"
                )
            )
    return 0


def _format_calibrations(results: Sequence[Calibration], args: argparse.Namespace) -> str:
    if args.target_large_share is not None:
        head = (
            f"target: at most {args.target_large_share:.1%} of requests on the large tier "
            "(a request goes large when its score >= threshold)"
        )
    else:
        head = (
            f"target: at most USD {args.monthly_budget} per month per tenant ({args.period_days:g} "
            f"days of traffic, {DAYS_PER_MONTH}-day month; a request goes large when its score "
            ">= threshold)"
        )
    volume = "requests" if args.monthly_budget is None else "req/month"
    lines = [head, f"{'tenant':<20} {'rows':>7} {volume:>10} {'threshold':>10} {'large':>7}"]
    if args.monthly_budget is not None:
        lines[1] += f" {'USD/month':>12} {'all small':>12} {'all large':>12}"
    for c in results:
        line = (
            f"{c.tenant:<20} {c.rows:>7} {c.requests:>10g} {c.threshold:>10g} {c.large_share:>7.1%}"
        )
        if c.monthly_usd is not None:
            line += f" {c.monthly_usd:>12.2f} {c.all_small_usd:>12.2f} {c.all_large_usd:>12.2f}"
        if not c.met:
            line += "  target not met"
        lines.append(line)
    return "\n".join(lines)


# --- calibrate: writing the config ------------------------------------------------------------


def _threshold_key(tenant: str) -> str:
    return (
        "router.classifier.threshold"
        if tenant == ANY_TENANT
        else (f"tenants.{tenant}.routing_threshold")
    )


def _threshold_path(tenant: str) -> list[str]:
    return (
        ["router", "classifier", "threshold"]
        if tenant == ANY_TENANT
        else (["tenants", tenant, "routing_threshold"])
    )


def write_thresholds(
    path: Path,
    thresholds: Mapping[str, float],
    *,
    note: str = "",
    load: Callable[[Path], object] = load_config,
) -> None:
    """Write each tenant's threshold into the YAML config at ``path``, keeping its comments and
    layout; tenant ``*`` sets ``router.classifier.threshold``. The written file must ``load``
    (``load_config``), else the original is put back and :class:`CommandError` raised."""
    import yaml

    try:
        original = path.read_bytes().decode("utf-8")
        text = original
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text") from exc
    for tenant, value in thresholds.items():
        text = set_yaml_value(
            text, _threshold_path(tenant), _float(value), comment=note, source=str(path)
        )
    # the line edit is checked against a real parser before anything is written
    document = yaml.safe_load(text)
    for tenant, value in thresholds.items():
        node: Any = document
        for key in _threshold_path(tenant):
            node = node.get(key) if isinstance(node, dict) else None
        if node != value:
            raise CommandError(
                f"{path}: could not place {_threshold_key(tenant)} safely in this file's layout; "
                f"set it to {_float(value)} by hand (nothing was written)"
            )

    def put(content: str) -> None:  # newline="" below: CRLF files keep their CRLF
        _write_atomically(path, lambda fh: fh.write(content))

    try:
        put(text)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        load(path)
    except ConfigError as exc:
        put(original)
        raise CommandError(
            f"the written config does not load, so {path} was restored: {exc}"
        ) from exc


def _float(value: float) -> str:
    return repr(float(value))


_KEY_LINE = re.compile(
    r"""^(?P<indent>[ ]*)"""
    r"""(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#"'{}\[\],&*!|>%@`-][^:#]*?|-[^\s:#][^:#]*?)"""
    r"""[ ]*:(?P<rest>(?:[ \t].*)?)$"""
)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _unquote(key: str) -> str:
    if key.startswith('"'):
        value = json.loads(key)
        return str(value)
    if key.startswith("'"):
        return key[1:-1].replace("''", "'")
    return key.strip()


def _split_comment(rest: str) -> tuple[str, str]:
    """``" 0.5  # note"`` -> ``("0.5", "# note")``; a ``#`` must follow whitespace to start a
    comment (quoted values are not expected where this is used)."""
    m = re.search(r"(^|[ \t])#", rest)
    if m is None:
        return rest.strip(), ""
    return rest[: m.start()].strip(), rest[m.start() :].strip()


def _key_text(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def set_yaml_value(
    text: str, path: Sequence[str], value: str, *, comment: str = "", source: str = "<yaml>"
) -> str:
    """``text`` with the block-style mapping key ``path`` set to the scalar ``value``.

    Only the one line changes (its own comment kept, unless it is an earlier ``comment`` of
    ours), or, if the key is missing, lines are added at the end of the parent's block with the
    parent's indentation; every other byte stays. Flow-style parents (``{...}``), aliases and
    other layouts it cannot edit safely raise :class:`CommandError` naming the key.
    """
    lines = text.splitlines(keepends=True)
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    start, end, parent_indent = 0, len(lines), -1
    dotted = ".".join(path)
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(path[: depth + 1])
        children = [i for i in range(start, end) if _content(lines[i])]
        child_indent = _indent(lines[children[0]]) if children else parent_indent + 2
        found = None
        for i in children:
            line = lines[i].rstrip("\r\n")
            if _indent(line) != child_indent or line.lstrip().startswith(("---", "...", "%")):
                continue
            m = _KEY_LINE.match(line)
            if m and _unquote(m.group("key")) == key:
                found = (i, m)
                break
        if found is None:
            return _insert(
                lines, start, end, parent_indent, child_indent, path[depth:], value, comment, eol
            )
        i, m = found
        own_value, own_comment = _split_comment(m.group("rest"))
        block_end = _block_end(lines, i + 1, end, child_indent)
        has_children = any(_content(lines[j]) for j in range(i + 1, block_end))
        if last:
            if has_children or own_value.startswith(("{", "[", "&", "*", "|", ">")):
                raise CommandError(
                    f"{source}: {where} is not a plain value; set it to {value} by hand"
                )
            note = (
                comment
                if (not own_comment or own_comment.startswith("# gateway calibrate"))
                else ""
            )
            tail = f"  # {note}" if note else (f"  {own_comment}" if own_comment else "")
            ending = lines[i][len(lines[i].rstrip("\r\n")) :]
            lines[i] = f"{m.group('indent')}{m.group('key')}: {value}{tail}{ending}"
            return "".join(lines)
        if own_value.startswith("{"):
            raise CommandError(
                f"{source}: {where} is written in flow style ({{...}}); write it as an indented "
                f"block, or add {dotted} = {value} by hand"
            )
        if own_value in ("", "null", "~") or re.fullmatch(r"&\S+", own_value):
            if own_value in ("null", "~"):  # an empty mapping spelt out: becomes a block
                ending = lines[i][len(lines[i].rstrip("\r\n")) :]
                tail = f"  {own_comment}" if own_comment else ""
                lines[i] = f"{m.group('indent')}{m.group('key')}:{tail}{ending}"
            start, end, parent_indent = i + 1, block_end, child_indent
            continue
        raise CommandError(
            f"{source}: {where} is not a mapping ({own_value!r}); cannot set {dotted}"
        )
    raise CommandError(f"{source}: empty key path")  # pragma: no cover - path is never empty


def _block_end(lines: Sequence[str], start: int, end: int, indent: int) -> int:
    """The index after a key's block: the next content line indented at most ``indent``."""
    for j in range(start, end):
        if _content(lines[j]) and _indent(lines[j]) <= indent:
            return j
    return end


def _insert(
    lines: list[str],
    start: int,
    end: int,
    parent_indent: int,
    child_indent: int,
    keys: Sequence[str],
    value: str,
    comment: str,
    eol: str,
) -> str:
    # after the block's last line that belongs to it: blank lines and comments indented like
    # the next key (or less) before the block's end describe what follows, not this block
    at = end
    while at > start and (
        not lines[at - 1].strip()
        or (not _content(lines[at - 1]) and _indent(lines[at - 1]) <= parent_indent)
    ):
        at -= 1
    if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
        lines[at - 1] += eol
    step = child_indent - parent_indent if parent_indent >= 0 else 2
    new = []
    indent = child_indent
    for n, key in enumerate(keys):
        if n == len(keys) - 1:
            tail = f"  # {comment}" if comment else ""
            new.append(f"{' ' * indent}{_key_text(key)}: {value}{tail}{eol}")
        else:
            new.append(f"{' ' * indent}{_key_text(key)}:{eol}")
            indent += max(step, 2)
    lines[at:at] = new
    return "".join(lines)
