"""What-if routing: re-decide past or supplied requests under another config, calling no model.

Two sources:

* the ledger: each record keeps the routing features (prompt tokens, turns, tools, images, the
  classifier's ``difficulty`` when it ran) and, when the tenant stores it, the last user message.
  The new config's ``decide`` runs on those; costs use the record's own token counts priced at the
  new route's model. Cache hits stay cache hits (the cache answers before any tier), and requests
  that failed before routing are left out (counted).
* a JSONL file of chat bodies (``{"model", "messages", ...}``, optional ``"tenant"``, optional
  ``"completion_tokens"``): tokens are counted and the classifier scores each row, exactly as the
  server would; the comparison is against ``against`` (the current config) instead of a record.

A logged request without a stored score, under a config whose router asks the classifier, is
scored from its stored text when there is one; otherwise the classifier step is skipped for it
(``unscored`` counts those), so the figures are honest about what could not be replayed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gateway.config import LoadedConfig
from gateway.errors import GatewayError
from gateway.ledger import LedgerRecord
from gateway.money import format_usd
from gateway.routing.policy import RouteRequest, decide
from gateway.runtime import routing_state
from gateway.tokens import TokenCounter
from gateway.usage import Usage

Progress = Callable[[int, int | None], None]

# Output tokens assumed for a supplied request that does not say how long its answer was.
DEFAULT_COMPLETION_TOKENS = 200


@dataclass(slots=True)
class Side:
    """Route mix and cost of one way of deciding."""

    routes: Counter[str] = field(default_factory=Counter)
    cost_micros: int = 0

    def add(self, route: str, cost: int) -> None:
        self.routes[route] += 1
        self.cost_micros += cost


@dataclass(slots=True)
class ReplayResult:
    before_label: str
    before: Side = field(default_factory=Side)
    after: Side = field(default_factory=Side)
    replayed: int = 0
    changed: int = 0
    # Requests left out, by why (failed before routing, unknown tenant, rejected by the new config).
    skipped: Counter[str] = field(default_factory=Counter)
    # Replayed without a classifier score though the new router asks for one.
    unscored: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            return {
                "routes": dict(sorted(s.routes.items())),
                "cost_micros": s.cost_micros,
                "cost_usd": format_usd(s.cost_micros),
            }

        return {
            "replayed": self.replayed,
            "changed": self.changed,
            "unscored": self.unscored,
            "skipped": dict(sorted(self.skipped.items())),
            self.before_label: side(self.before),
            "replayed_under_new_config": side(self.after),
            "cost_change_micros": self.after.cost_micros - self.before.cost_micros,
            "transitions": {f"{a} -> {b}": n for (a, b), n in sorted(self.transitions.items())},
        }


def _cost(loaded: LoadedConfig, route: str, usage: Usage) -> int:
    if route == "cache":
        return 0
    return loaded.prices.cost_micros(loaded.model_of(route), usage)


def _asks_classifier(loaded: LoadedConfig) -> bool:
    cfg = loaded.config.router.classifier
    return cfg is not None and cfg.enabled and "classifier" in loaded.config.router.order


class _Decider:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        tiers = frozenset(loaded.config.tiers.configured())
        self.state = routing_state(loaded, tiers)
        self.asks_classifier = _asks_classifier(loaded)

    def route(self, tenant: str, request: RouteRequest) -> str:
        config = self.loaded.config
        return decide(request, config.tenants[tenant], self.state, config).route


def _feature(features: Mapping[str, Any], name: str, default: Any) -> Any:
    value = features.get(name, default)
    return default if value is None else value


def replay_records(
    records: Iterable[LedgerRecord],
    new: LoadedConfig,
    *,
    total: int | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Re-decide ledger records under ``new``; compares with what was recorded."""
    decider = _Decider(new)
    result = ReplayResult(before_label="recorded")
    done = 0
    for rec in records:
        done += 1
        if progress is not None and done % 500 == 0:
            progress(done, total)
        if rec.route == "none" or not rec.features:
            result.skipped["failed before routing"] += 1
            continue
        if rec.tenant not in new.config.tenants:
            result.skipped[f"tenant {rec.tenant!r} not in the new config"] += 1
            continue
        usage = Usage(prompt_tokens=rec.prompt_tokens, completion_tokens=rec.completion_tokens)
        if rec.route == "cache":
            after = "cache"
        else:
            f = rec.features
            difficulty = f.get("difficulty")
            text = rec.request_text or ""
            messages: Sequence[Mapping[str, Any]] = ()
            if difficulty is None and decider.asks_classifier:
                if text:
                    messages = ({"role": "user", "content": text},)
                else:
                    result.unscored += 1
            request = RouteRequest(
                requested_model=rec.requested_model,
                prompt_tokens=int(_feature(f, "prompt_tokens", rec.prompt_tokens)),
                last_user_text=text,
                turns=int(_feature(f, "turns", 1)),
                has_tools=bool(_feature(f, "has_tools", False)),
                has_images=bool(_feature(f, "has_images", False)),
                messages=messages,
                difficulty=float(difficulty) if isinstance(difficulty, int | float) else None,
                # Nothing to score: pass the classifier step rather than score an empty prompt.
                scoreable=difficulty is not None or bool(messages),
            )
            try:
                after = decider.route(rec.tenant, request)
            except GatewayError as exc:
                result.skipped[f"rejected by the new config: {exc.code}"] += 1
                continue
        result.replayed += 1
        result.before.add(rec.route, rec.cost_micros)
        result.after.add(after, _cost(new, after, usage))
        if after != rec.route:
            result.changed += 1
            result.transitions[(rec.route, after)] += 1
    if progress is not None and done >= 500:  # a bar for a few hundred rows is noise
        progress(done, total)
    return result


def iter_request_rows(src: IO[str], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(src, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{lineno}: not JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{source}:{lineno}: a row must be a JSON object (a chat body)")
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(
                f"{source}:{lineno}: a row needs a non-empty \"messages\" list, like the body "
                "of POST /v1/chat/completions"
            )
        yield lineno, row


def replay_requests(
    path: Path,
    new: LoadedConfig,
    against: LoadedConfig,
    *,
    default_tenant: str | None = None,
    tokens: TokenCounter | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Decide each supplied chat body under ``new`` and under ``against`` (the current config)."""
    tokens = tokens or TokenCounter()
    before, after = _Decider(against), _Decider(new)
    result = ReplayResult(before_label="current_config")
    with path.open(encoding="utf-8") as src:
        for done, (lineno, row) in enumerate(iter_request_rows(src, str(path)), 1):
            if progress is not None and done % 500 == 0:
                progress(done, None)
            tenant = row.get("tenant") or default_tenant or _only_tenant(new, f"{path}:{lineno}")
            if tenant not in new.config.tenants or tenant not in against.config.tenants:
                result.skipped[f"tenant {tenant!r} not in both configs"] += 1
                continue
            messages = row["messages"]
            model = str(row.get("model") or "auto")
            prompt_tokens = tokens.count_messages(messages, "gpt-4o")
            last_user = next(
                (m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""
            )
            request = RouteRequest(
                requested_model=model,
                prompt_tokens=prompt_tokens,
                last_user_text=last_user if isinstance(last_user, str) else "",
                turns=sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user"),
                has_tools=bool(row.get("tools")),
                has_images=_has_images(messages),
                messages=messages,
            )
            completion = int(row.get("completion_tokens") or DEFAULT_COMPLETION_TOKENS)
            usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion)
            try:
                was = before.route(tenant, request)
                now = after.route(tenant, request)
            except GatewayError as exc:
                result.skipped[f"rejected: {exc.code}"] += 1
                continue
            result.replayed += 1
            result.before.add(was, _cost(against, was, usage))
            result.after.add(now, _cost(new, now, usage))
            if now != was:
                result.changed += 1
                result.transitions[(was, now)] += 1
    return result


def _has_images(messages: Sequence[Any]) -> bool:
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") not in (None, "text") for p in content
        ):
            return True
    return False


def _only_tenant(loaded: LoadedConfig, where: str) -> str:
    tenants = list(loaded.config.tenants)
    if len(tenants) == 1:
        return tenants[0]
    raise ValueError(
        f"{where}: the row names no \"tenant\" and the config has {len(tenants)} "
        f"({', '.join(tenants)}); add \"tenant\" to the rows or pass --tenant"
    )


def format_result(result: ReplayResult) -> str:
    routes = sorted(set(result.before.routes) | set(result.after.routes))
    label = result.before_label.replace("_", " ")
    lines = [f"{'route':<8} {label:>18} {'replayed':>18}"]
    for route in routes:
        b, a = result.before.routes[route], result.after.routes[route]
        lines.append(
            f"{route:<8} {b:>9} ({_share(b, result.replayed):>6}) "
            f"{a:>9} ({_share(a, result.replayed):>6})"
        )
    delta = result.after.cost_micros - result.before.cost_micros
    lines.append(
        f"{'USD':<8} {format_usd(result.before.cost_micros):>18} "
        f"{format_usd(result.after.cost_micros):>18}  ({'+' if delta >= 0 else '-'}"
        f"{format_usd(abs(delta))})"
    )
    lines.append(f"replayed {result.replayed}, decisions changed {result.changed}")
    for (was, now), count in sorted(result.transitions.items()):
        lines.append(f"  {was} -> {now}: {count}")
    if result.unscored:
        lines.append(
            f"{result.unscored} replayed without a classifier score (none logged and no stored "
            "text; set tenants.<name>.store_request_text to replay the classifier on them)"
        )
    for why, count in sorted(result.skipped.items()):
        lines.append(f"skipped {count}: {why}")
    return "\n".join(lines)


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"
