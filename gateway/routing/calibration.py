"""``gateway calibrate``: the classifier threshold that meets a large-tier share or a budget.

Per tenant (rows' ``"tenant"``; rows without one are tenant ``*``, whose threshold is the
gateway-wide ``router.classifier.threshold``): :func:`calibrate_share` and
:func:`calibrate_budget` choose it, :func:`run_calibrate` is the command, and
``gateway.routing.thresholds_yaml.write_thresholds`` writes the result into the config.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.routing.rows import (
    CommandError,
    conversation_problem,
    existing_files,
    is_number,
    load_weights,
    read_rows,
)
from gateway.routing.thresholds_yaml import ANY_TENANT, threshold_key, write_thresholds

if TYPE_CHECKING:
    pass

DAYS_PER_MONTH = 30

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
    problem = conversation_problem(row)
    if problem:
        return problem
    tenant = row.get("tenant", ANY_TENANT)
    if not isinstance(tenant, str) or not tenant:
        return f'"tenant" must be a non-empty string, not {json.dumps(tenant)}'
    count = row.get("count", 1)
    if not is_number(count) or count <= 0:
        return (
            f'"count" (requests this row stands for) must be a number > 0, not {json.dumps(count)}'
        )
    score = row.get("score")
    if score is not None and not (is_number(score) and 0.0 <= score <= 1.0):
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
        for lineno, row in read_rows(path):
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


def run_calibrate(args: argparse.Namespace) -> int:
    _check_calibrate_args(args)
    paths = existing_files(args.data)
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
        classifier = load_weights(weights)
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
        keys = ", ".join(threshold_key(c.tenant) for c in results)
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


