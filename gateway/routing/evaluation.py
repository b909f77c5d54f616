"""Routing metrics (RouteLLM's APGR, CPT and the PGR curve) and the cross-validation splits.

A router gives every prompt a score (higher = more likely to need the strong tier). Routing the
top ``share`` of prompts to the strong tier and the rest to the weak tier gives a quality
(mean correctness, or mean judge score). With ``W`` the all-weak quality and ``S`` the all-strong
quality, **PGR** = (quality − W) / (S − W), the share of the quality gap recovered. **APGR** is the
area under PGR over the strong share 0..1 (random ≈ 0.5; an oracle can exceed 1 when the weak
model is sometimes right where the strong one is wrong). **CPT(x)** is the smallest strong share
whose PGR reaches ``x``.

Ties are handled exactly: prompts with the same score are routed together in a random order, so
within a tie group the curve is the straight line between the group's ends (its expected value).
The metrics are plain Python. ``eval_router`` and ``classify_jsonl`` (the `gateway eval-router`
and `gateway classify` commands) score rows with the shipped classifier, through the same code
path the server uses; nothing here imports scikit-learn.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Curve",
    "RouterReport",
    "SetReport",
    "apgr",
    "bootstrap_apgr",
    "classify_jsonl",
    "cpt",
    "cross_val_scores",
    "eval_router",
    "format_reports",
    "evaluate_scores",
    "group_kfold",
    "kfold",
    "length_scores",
    "measure_latency",
    "oracle_scores",
    "pgr_curve",
    "random_apgr",
]


@dataclass(frozen=True, slots=True)
class Curve:
    """The PGR curve: ``pgr[i]`` at strong share ``shares[i]`` (piecewise linear between)."""

    shares: tuple[float, ...]
    pgr: tuple[float, ...]
    weak_quality: float
    strong_quality: float


def _check(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> int:
    n = len(scores)
    if n == 0 or len(weak) != n or len(strong) != n:
        raise ValueError("scores, weak and strong must be non-empty and of the same length")
    return n


def pgr_curve(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> Curve:
    """The PGR curve of a router, one point per group of tied scores (plus share 0).

    ``weak[i]``/``strong[i]`` are the quality of each tier's answer to prompt ``i`` (1/0 for
    correct/incorrect, or a judge score).
    """
    n = _check(scores, weak, strong)
    total_weak = math.fsum(weak)
    total_strong = math.fsum(strong)
    gap = total_strong - total_weak
    if gap == 0:
        raise ValueError("the strong and weak tiers have the same total quality: PGR is undefined")
    order = sorted(range(n), key=lambda i: scores[i], reverse=True)
    shares = [0.0]
    pgr = [0.0]
    gain = 0.0
    i = 0
    while i < n:
        j = i
        score = scores[order[i]]
        while j < n and scores[order[j]] == score:
            gain += strong[order[j]] - weak[order[j]]
            j += 1
        shares.append(j / n)
        pgr.append(gain / gap)
        i = j
    return Curve(tuple(shares), tuple(pgr), total_weak / n, total_strong / n)


def _area(curve: Curve) -> float:
    xs, ys = curve.shares, curve.pgr
    return math.fsum((xs[k + 1] - xs[k]) * (ys[k + 1] + ys[k]) / 2 for k in range(len(xs) - 1))


def apgr(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> float:
    """Area under the PGR curve over strong share 0..1 (tie-exact)."""
    return _area(pgr_curve(scores, weak, strong))


def cpt(
    scores: Sequence[float], weak: Sequence[float], strong: Sequence[float], target: float
) -> float:
    """Smallest strong-call share whose PGR reaches ``target`` (e.g. 0.5); 1.0 if never."""
    curve = pgr_curve(scores, weak, strong)
    xs, ys = curve.shares, curve.pgr
    if ys[0] >= target:
        return 0.0
    for k in range(len(xs) - 1):
        y0, y1 = ys[k], ys[k + 1]
        if y1 >= target:
            if y1 == y0:
                return xs[k + 1]
            return xs[k] + (xs[k + 1] - xs[k]) * (target - y0) / (y1 - y0)
    return 1.0


def oracle_scores(weak: Sequence[float], strong: Sequence[float]) -> list[float]:
    """The scores of a router that knows the answers: the strong tier's gain on each prompt."""
    return [s - w for w, s in zip(weak, strong, strict=True)]


def length_scores(prompts: Sequence[str]) -> list[float]:
    """The prompt-length baseline: longer prompts go to the strong tier first."""
    return [float(len(p)) for p in prompts]


def random_apgr(weak: Sequence[float], strong: Sequence[float]) -> float:
    """A random router's expected APGR: every prompt tied, so the diagonal (exactly 0.5)."""
    return apgr([0.0] * len(weak), weak, strong)


def bootstrap_apgr(
    scores: Sequence[float],
    weak: Sequence[float],
    strong: Sequence[float],
    *,
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """APGR and a percentile bootstrap interval: ``(apgr, low, high)``.

    Rows are resampled with replacement; resamples whose tiers tie in total quality (PGR
    undefined) are skipped.
    """
    n = _check(scores, weak, strong)
    point = apgr(scores, weak, strong)
    rng = random.Random(seed)
    values: list[float] = []
    for _ in range(rounds):
        idx = [rng.randrange(n) for _ in range(n)]
        w = [weak[i] for i in idx]
        s = [strong[i] for i in idx]
        if math.fsum(s) == math.fsum(w):
            continue
        values.append(apgr([scores[i] for i in idx], w, s))
    if not values:
        return point, point, point
    values.sort()
    tail = (1.0 - level) / 2
    low = values[min(len(values) - 1, int(tail * len(values)))]
    high = values[min(len(values) - 1, int((1.0 - tail) * len(values)))]
    return point, low, high


@dataclass(frozen=True, slots=True)
class RouterReport:
    """One router on one data set: what `gateway eval-router` prints."""

    name: str
    rows: int
    apgr: float
    cpt50: float
    cpt80: float
    weak_quality: float
    strong_quality: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "rows": self.rows,
            "apgr": round(self.apgr, 4),
            "cpt50": round(self.cpt50, 4),
            "cpt80": round(self.cpt80, 4),
            "weak_quality": round(self.weak_quality, 4),
            "strong_quality": round(self.strong_quality, 4),
        }


def evaluate_scores(
    name: str, scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]
) -> RouterReport:
    """APGR, CPT(50%) and CPT(80%) of one router's scores."""
    curve = pgr_curve(scores, weak, strong)
    return RouterReport(
        name=name,
        rows=len(scores),
        apgr=_area(curve),
        cpt50=cpt(scores, weak, strong, 0.5),
        cpt80=cpt(scores, weak, strong, 0.8),
        weak_quality=curve.weak_quality,
        strong_quality=curve.strong_quality,
    )


def kfold(n: int, k: int, *, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Shuffled k-fold splits of ``range(n)``: ``[(train, test), ...]``, each row tested once."""
    if k < 2 or k > n:
        raise ValueError("need 2 <= k <= n")
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    folds = [sorted(idx[f::k]) for f in range(k)]
    return [
        (sorted(i for g, fold in enumerate(folds) if g != f for i in fold), folds[f])
        for f in range(k)
    ]


def group_kfold(groups: Sequence[Hashable], k: int) -> list[tuple[list[int], list[int]]]:
    """k folds that never split a group: every test fold holds groups its training never saw.

    Groups are dealt largest first to the fold with the fewest rows so far (ties by name), so
    folds are about the same size and the split is deterministic.
    """
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if k < 2 or k > len(members):
        raise ValueError("need 2 <= k <= number of groups")
    folds: list[list[int]] = [[] for _ in range(k)]
    for _, rows in sorted(members.items(), key=lambda kv: (-len(kv[1]), str(kv[0]))):
        smallest = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[smallest].extend(rows)
    n = len(groups)
    out = []
    for f in range(k):
        test = sorted(folds[f])
        held = set(test)
        out.append(([i for i in range(n) if i not in held], test))
    return out


def cross_val_scores(
    n: int,
    splits: Sequence[tuple[Sequence[int], Sequence[int]]],
    fit_predict: Callable[[Sequence[int], Sequence[int]], Sequence[float]],
) -> list[float]:
    """Out-of-fold scores: ``fit_predict(train, test)`` for each split, put back in row order."""
    out = [math.nan] * n
    for train, test in splits:
        for i, s in zip(test, fit_predict(train, test), strict=True):
            out[i] = float(s)
    return out


# --- the commands' bodies ---------------------------------------------------------------------


def _messages(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = row.get("messages")
    if isinstance(messages, list):
        return [m for m in messages if isinstance(m, Mapping)]
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    raise ValueError('a row needs "prompt" (string) or "messages" (list)')


def _prompt_text(messages: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, Mapping) and "text" in p)
    return "\n".join(str(p) for p in parts)


def _labels(row: Mapping[str, Any]) -> tuple[float, float]:
    if "weak_correct" in row and "strong_correct" in row:
        return (1.0 if row["weak_correct"] else 0.0), (1.0 if row["strong_correct"] else 0.0)
    if "weak_score" in row and "strong_score" in row:
        return float(row["weak_score"]), float(row["strong_score"])
    raise ValueError(
        'a row needs "weak_correct" and "strong_correct", or "weak_score" and "strong_score"'
    )


@dataclass(frozen=True, slots=True)
class SetReport:
    """`gateway eval-router` on one file: the router beside random, prompt length and oracle."""

    name: str
    rows: int
    routers: tuple[RouterReport, ...]
    apgr_interval: tuple[float, float] | None = None  # bootstrap, for the router

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "routers": [r.as_dict() for r in self.routers],
            "apgr_95ci": (
                [round(self.apgr_interval[0], 4), round(self.apgr_interval[1], 4)]
                if self.apgr_interval
                else None
            ),
        }


def eval_router(
    data: Sequence[str | Path],
    *,
    weights: str | Path | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> list[SetReport]:
    """Score every labelled row of each JSONL file with the classifier and report APGR,
    CPT(50%), CPT(80%) beside a random router, prompt length and the oracle.

    ``weights``: a weights file (the shipped one by default). Files with fewer than 500 rows also
    get a ``bootstrap`` 95% interval of the router's APGR (0 turns it off).
    """
    from gateway.routing.classifier import DifficultyClassifier

    classifier = DifficultyClassifier.load(weights)
    reports = []
    for path in data:
        weak: list[float] = []
        strong: list[float] = []
        scores: list[float] = []
        texts: list[str] = []
        with Path(path).open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    messages = _messages(row)
                    w, s = _labels(row)
                except (ValueError, TypeError, KeyError) as exc:
                    raise ValueError(f"{path}:{lineno}: {exc}") from exc
                weak.append(w)
                strong.append(s)
                scores.append(classifier.score(messages, bool(row.get("tools", False))).score)
                texts.append(_prompt_text(messages))
        name = Path(path).name
        routers = (
            evaluate_scores(f"router {classifier.version}", scores, weak, strong),
            evaluate_scores("random", [0.0] * len(scores), weak, strong),
            evaluate_scores("prompt length", length_scores(texts), weak, strong),
            evaluate_scores("oracle", oracle_scores(weak, strong), weak, strong),
        )
        interval = None
        if bootstrap and len(scores) < 500:
            _, low, high = bootstrap_apgr(scores, weak, strong, rounds=bootstrap, seed=seed)
            interval = (low, high)
        reports.append(SetReport(name, len(scores), routers, interval))
    return reports


def format_reports(reports: Sequence[SetReport]) -> str:
    """A plain-text table of ``eval_router``'s reports."""
    lines = [f"{'data':<24} {'router':<22} {'rows':>6} {'APGR':>7} {'CPT50':>7} {'CPT80':>7}"]
    for rep in reports:
        for r in rep.routers:
            lines.append(
                f"{rep.name:<24} {r.name:<22} {r.rows:>6} {r.apgr:>7.3f} "
                f"{r.cpt50:>7.1%} {r.cpt80:>7.1%}"
            )
        if rep.apgr_interval:
            low, high = rep.apgr_interval
            lines.append(
                f"{rep.name:<24} router APGR 95% bootstrap interval [{low:.3f}, {high:.3f}]"
            )
    return "\n".join(lines)


def classify_jsonl(
    src: IO[str], dst: IO[str], *, weights: str | Path | None = None, explain: bool = False
) -> int:
    """`gateway classify`: each row with ``"prompt"`` or ``"messages"`` is written back with
    ``"score"`` added (and ``"top_features"`` with ``explain``), scored exactly as the server
    scores a request. Blank lines are skipped; returns the number of rows written."""
    from gateway.routing.classifier import DifficultyClassifier

    classifier = DifficultyClassifier.load(weights)
    written = 0
    for lineno, line in enumerate(src, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("a row must be a JSON object")
            messages = _messages(row)
        except ValueError as exc:
            raise ValueError(f"line {lineno}: {exc}") from exc
        scored = classifier.score(messages, bool(row.get("tools", False)))
        row["score"] = round(scored.score, 6)
        if explain:
            row["top_features"] = [[name, value] for name, value in scored.top_features]
        dst.write(json.dumps(row, ensure_ascii=False) + "\n")
        written += 1
    return written


def measure_latency(
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    *,
    weights: str | Path | None = None,
    warmup: int = 200,
) -> dict[str, float]:
    """Wall time of one decision (features + score + top features), once per conversation:
    ``{"p50_us", "p90_us", "p99_us", "mean_us", "n"}``."""
    import time

    from gateway.routing.classifier import DifficultyClassifier

    classifier = DifficultyClassifier.load(weights)
    for messages in conversations[:warmup]:
        classifier.score(messages)
    clock = time.perf_counter
    times: list[float] = []
    for messages in conversations:
        start = clock()
        classifier.score(messages)
        times.append(clock() - start)
    times.sort()
    n = len(times)
    return {
        "n": float(n),
        "p50_us": times[n // 2] * 1e6,
        "p90_us": times[int(n * 0.9)] * 1e6,
        "p99_us": times[min(n - 1, int(n * 0.99))] * 1e6,
        "mean_us": sum(times) / n * 1e6,
    }
