"""The routing decision point: a pure function of (request, tenant, state) → decision with reasons.

Order: the model name the bot sent (a pinned alias wins when the tenant may pin), then the
config's rules top to bottom (first match wins), then the router's default tier. The difficulty
classifier (routing issue) and budget state (budgets issue) plug in here as more inputs; nothing
outside this module decides a route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config import AUTO, Condition, GatewayConfig, ResolvedCapabilities, TenantConfig
from gateway.errors import InvalidRequest, ModelNotFound

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


@dataclass(frozen=True, slots=True)
class RoutingState:
    """Tenant and gateway state the decision may depend on."""

    # Tiers that are configured and may be used now.
    available_tiers: frozenset[str]
    # What each tier can take; a tier missing here is assumed to take anything.
    capabilities: Mapping[str, ResolvedCapabilities] = field(default_factory=dict)
    # Tier -> tiers to try next when it fails before its first byte.
    fallback_order: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    route: str
    reasons: tuple[str, ...]
    features: Mapping[str, Feature] = field(default_factory=dict)
    pinned: bool = False
    # Tiers to try, in order, if ``route`` fails before its first byte (all able to serve it).
    fallbacks: tuple[str, ...] = ()


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
) -> RoutingDecision:
    """Choose the tier for one request. Raises ModelNotFound for a name the tenant may not use."""
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
    if unfit:
        reasons.extend(f"{tier} {why}" for tier, why in unfit.items())
        state = RoutingState(
            available_tiers=state.available_tiers - frozenset(unfit),
            capabilities=state.capabilities,
            fallback_order=state.fallback_order,
        )
    decision = _choose(request, tenant, state, config, model, alias.route, reasons, features)
    fallbacks = tuple(
        t for t in state.fallback_order.get(decision.route, ()) if t in state.available_tiers
    )
    return RoutingDecision(
        route=decision.route,
        reasons=decision.reasons,
        features=features,
        pinned=decision.pinned,
        fallbacks=fallbacks,
    )


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
    return ", ".join(why) or "always"
