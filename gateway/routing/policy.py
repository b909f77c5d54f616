"""The routing decision point: a pure function of (request, tenant, state) → decision with reasons.

Order, every step named in the decision's reasons:

1. filters: tiers that cannot take the request (capabilities) or are failing their health checks
   are removed (if every tier is unhealthy, all are kept: trying beats refusing);
2. the model name the bot sent: a pinned alias wins when the tenant may pin;
3. the deciding steps in ``router.order`` (default: rules, then the classifier); first wins;
4. the router's default tier;
5. the tenant's budget state may downgrade the result (large → small);
6. a handoff (``escalate``) sends the request to the large tier, whatever came before.

Nothing outside this module decides a route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway.config import (
    AUTO,
    ClassifierConfig,
    Condition,
    GatewayConfig,
    ResolvedCapabilities,
    TenantConfig,
)
from gateway.errors import InvalidRequest, ModelNotFound

if TYPE_CHECKING:
    from gateway.routing.classifier import DifficultyClassifier

Feature = float | int | str | bool


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the router sees of a request (already parsed and counted)."""

    requested_model: str
    prompt_tokens: int
    last_user_text: str
    turns: int
    has_tools: bool = False
    has_images: bool = False
    wants_response_format: bool = False
    # The conversation, for the classifier (scored only when the classifier step is reached).
    messages: Sequence[Mapping[str, Any]] = ()
    # A score computed earlier (replay of logged requests); skips the classifier.
    difficulty: float | None = None
    # False when there is nothing to score (replay of a record with no score and no text): the
    # classifier step then passes instead of scoring an empty conversation as easy.
    scoreable: bool = True
    # False for a tenant that masks personal data: a regex rule's reason then names the pattern
    # but does not quote what it matched (reasons reach the ledger, logs and traces).
    quote_matches: bool = True


@dataclass(frozen=True, slots=True)
class BudgetSignal:
    """The tenant's budget state as the router sees it (filled by the budget stage)."""

    # Send requests that would go to the large tier here instead (soft limit reached).
    downgrade_to: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RoutingState:
    """Tenant and gateway state the decision may depend on."""

    # Tiers that are configured and may be used now.
    available_tiers: frozenset[str]
    # What each tier can take; a tier missing here is assumed to take anything.
    capabilities: Mapping[str, ResolvedCapabilities] = field(default_factory=dict)
    # Tier -> tiers to try next when it fails before its first byte.
    fallback_order: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The difficulty classifier when `router.classifier` is configured and enabled.
    classifier: DifficultyClassifier | None = None


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    route: str
    reasons: tuple[str, ...]
    features: Mapping[str, Feature] = field(default_factory=dict)
    pinned: bool = False
    # Tiers to try, in order, if ``route`` fails before its first byte (all able to serve it).
    fallbacks: tuple[str, ...] = ()
    # The classifier's score and the features that drove it, when the classifier was asked.
    score: float | None = None
    top_features: tuple[tuple[str, float], ...] = ()
    threshold: float | None = None


def unfit_reason(request: RouteRequest, caps: ResolvedCapabilities) -> str | None:
    """Why a tier with these capabilities cannot serve the request, or None if it can."""
    if request.has_tools and not caps.tools:
        return "takes no tools"
    if request.has_images and not caps.images:
        return "takes no images"
    if request.wants_response_format and not caps.response_format:
        return "takes no response_format"
    if caps.context_window is not None and request.prompt_tokens > caps.context_window:
        return f"context window {caps.context_window} < {request.prompt_tokens} prompt tokens"
    return None


def allowed_models(config: GatewayConfig, tenant: TenantConfig) -> list[str]:
    """Model names this tenant may send, in config order."""
    if not tenant.models:
        return list(config.models)
    allowed = set(tenant.models)
    return [m for m in config.models if m in allowed]


def decide(
    request: RouteRequest,
    tenant: TenantConfig,
    state: RoutingState,
    config: GatewayConfig,
    *,
    unhealthy: frozenset[str] = frozenset(),
    budget: BudgetSignal | None = None,
    escalate: str | None = None,
) -> RoutingDecision:
    """Choose the tier for one request. Raises ModelNotFound for a name the tenant may not use.

    ``escalate``: why this request must go to the large tier (``"handoff: legal_threat"``); it
    wins over pins, rules, the classifier and a soft budget limit, when the large tier can
    serve the request.
    """
    features: dict[str, Feature] = {
        "prompt_tokens": request.prompt_tokens,
        "turns": request.turns,
        "has_tools": request.has_tools,
        "has_images": request.has_images,
    }
    model = request.requested_model
    alias = config.models.get(model)
    if alias is None or (tenant.models and model not in tenant.models):
        known = ", ".join(allowed_models(config, tenant))
        raise ModelNotFound(
            f"The model {model!r} does not exist or you do not have access to it; "
            f"models available: {known}",
            param="model",
        )

    reasons: list[str] = []
    unfit: dict[str, str] = {}
    for tier in sorted(state.available_tiers):
        caps = state.capabilities.get(tier)
        why = unfit_reason(request, caps) if caps is not None else None
        if why is not None:
            unfit[tier] = why
    if unfit and len(unfit) == len(state.available_tiers):
        detail = "; ".join(f"{tier} {why}" for tier, why in unfit.items())
        raise InvalidRequest(f"No configured tier can serve this request: {detail}.")
    available = state.available_tiers - frozenset(unfit)
    reasons.extend(f"{tier} {why}" for tier, why in unfit.items())
    failing = available & unhealthy
    if failing and failing != available:
        available -= failing
        reasons.extend(f"{tier} failing its health checks, skipped" for tier in sorted(failing))
    if available != state.available_tiers:
        state = replace(state, available_tiers=available)
    decision = _choose(request, tenant, state, config, model, alias.route, reasons, features)
    if budget is not None and budget.downgrade_to and not decision.pinned:
        decision = _downgrade(decision, budget, state)
    if escalate:
        decision = _escalate(decision, escalate, state)
    if decision.score is not None:
        features["difficulty"] = round(decision.score, 4)
    fallbacks = tuple(
        t for t in state.fallback_order.get(decision.route, ()) if t in state.available_tiers
    )
    return replace(decision, features=features, fallbacks=fallbacks)


def _downgrade(
    decision: RoutingDecision, budget: BudgetSignal, state: RoutingState
) -> RoutingDecision:
    target = budget.downgrade_to
    if decision.route != "large" or target is None or target == decision.route:
        return decision
    if target not in state.available_tiers:
        why = f"budget: {budget.reason}; {target} cannot serve it, kept {decision.route}"
        return replace(decision, reasons=(*decision.reasons, why))
    why = f"budget: {budget.reason}; downgraded {decision.route} -> {target}"
    return replace(decision, route=target, reasons=(*decision.reasons, why))


def _escalate(decision: RoutingDecision, why: str, state: RoutingState) -> RoutingDecision:
    if decision.route == "large":
        return replace(decision, reasons=(*decision.reasons, why))
    if "large" not in state.available_tiers:
        why = f"{why}; the large tier cannot serve it, kept {decision.route}"
        return replace(decision, reasons=(*decision.reasons, why))
    why = f"{why}; {decision.route} -> large"
    return replace(decision, route="large", reasons=(*decision.reasons, why))


def threshold_for(tenant: TenantConfig, config: GatewayConfig) -> float:
    """The classifier threshold this tenant's requests are held against."""
    if tenant.routing_threshold is not None:
        return tenant.routing_threshold
    classifier = config.router.classifier
    return classifier.threshold if classifier is not None else ClassifierConfig().threshold


def _choose(
    request: RouteRequest,
    tenant: TenantConfig,
    state: RoutingState,
    config: GatewayConfig,
    model: str,
    alias_route: str,
    reasons: list[str],
    features: Mapping[str, Feature],
) -> RoutingDecision:
    """Pinned alias, then rules, then the default, among ``state.available_tiers``."""
    if alias_route != AUTO:
        if not tenant.allow_pin:
            reasons.append(f"model {model!r} pins {alias_route}, but this tenant may not pin")
        elif alias_route in state.available_tiers:
            return RoutingDecision(
                route=alias_route,
                reasons=(f"model {model!r} pins the {alias_route} tier",),
                features=features,
                pinned=True,
            )
        else:
            reasons.append(f"model {model!r} pins {alias_route}, which is unavailable")

    for step in config.router.order:
        if step == "rules":
            chosen = _rules(request, state, config, reasons, features)
        else:
            chosen = _classify(request, tenant, state, config, reasons, features)
        if chosen is not None:
            return chosen

    route = config.router.default
    if route not in state.available_tiers:
        fallback = sorted(state.available_tiers)
        if not fallback:
            raise ModelNotFound("no tier is available for this request", param="model")
        reasons.append(f"default tier {route} unavailable; using {fallback[0]}")
        route = fallback[0]
    else:
        reasons.append("no rule matched: default tier")
    return RoutingDecision(route=route, reasons=tuple(reasons), features=features)


def _rules(
    request: RouteRequest,
    state: RoutingState,
    config: GatewayConfig,
    reasons: list[str],
    features: Mapping[str, Feature],
) -> RoutingDecision | None:
    for i, rule in enumerate(config.router.rules):
        why = _matches(rule.when, request)
        if why is None:
            continue
        label = rule.name or f"rules[{i}]"
        if rule.route not in state.available_tiers:
            reasons.append(f"rule {label!r} matched ({why}) but {rule.route} is unavailable")
            continue
        reasons.append(f"rule {label!r}: {why}")
        return RoutingDecision(route=rule.route, reasons=tuple(reasons), features=features)
    return None


def _classify(
    request: RouteRequest,
    tenant: TenantConfig,
    state: RoutingState,
    config: GatewayConfig,
    reasons: list[str],
    features: Mapping[str, Feature],
) -> RoutingDecision | None:
    """Score against the tenant's threshold: at or above → large, below → small."""
    cfg = config.router.classifier
    if cfg is None or not cfg.enabled:
        return None  # no classifier configured: the next step decides
    top: tuple[tuple[str, float], ...] = ()
    if request.difficulty is None and not request.scoreable:
        reasons.append("classifier: nothing to score, step passed")
        return None
    if request.difficulty is not None:
        score = request.difficulty
    elif state.classifier is not None:
        scored = state.classifier.score(request.messages, request.has_tools)
        score, top = scored.score, scored.top_features
    else:
        return None  # weights not loaded (a runtime built without them): the next step decides
    threshold = threshold_for(tenant, config)
    want = "large" if score >= threshold else "small"
    sign = ">=" if want == "large" else "<"
    drivers = ", ".join(f"{name} {value:+.2f}" for name, value in top)
    why = f"classifier: score {score:.3f} {sign} threshold {threshold:.2f}"
    if drivers:
        why += f" ({drivers})"
    route = want
    if want not in state.available_tiers:
        others = sorted(state.available_tiers)
        if not others:
            return None
        route = others[0]
        why += f"; {want} unavailable, using {route}"
    reasons.append(why)
    return RoutingDecision(
        route=route,
        reasons=tuple(reasons),
        features=features,
        score=score,
        top_features=top,
        threshold=threshold,
    )


def _matches(when: Condition, request: RouteRequest) -> str | None:
    """Why the condition holds, or None. Every given test must hold."""
    why: list[str] = []
    if when.prompt_tokens_over is not None:
        if request.prompt_tokens <= when.prompt_tokens_over:
            return None
        why.append(f"prompt_tokens {request.prompt_tokens} > {when.prompt_tokens_over}")
    if when.prompt_tokens_under is not None:
        if request.prompt_tokens >= when.prompt_tokens_under:
            return None
        why.append(f"prompt_tokens {request.prompt_tokens} < {when.prompt_tokens_under}")
    if when.has_tools is not None:
        if request.has_tools != when.has_tools:
            return None
        why.append("tools requested" if when.has_tools else "no tools")
    if when.has_images is not None:
        if request.has_images != when.has_images:
            return None
        why.append("images attached" if when.has_images else "no images")
    if when.min_turns is not None:
        if request.turns < when.min_turns:
            return None
        why.append(f"turns {request.turns} >= {when.min_turns}")
    if when.keywords_any:
        text = request.last_user_text.casefold()
        hit = next((k for k in when.keywords_any if k.casefold() in text), None)
        if hit is None:
            return None
        why.append(f"keyword {hit!r}")
    if when.regex_any:
        found = next(
            (m for r in when.compiled_regexes if (m := r.search(request.last_user_text))), None
        )
        if found is None:
            return None
        quoted = f" {found.group(0)[:40]!r}" if request.quote_matches else ""
        why.append(f"regex {found.re.pattern!r} matched{quoted}")
    return ", ".join(why) or "always"
