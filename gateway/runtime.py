"""Everything a request needs, built from one loaded config: swapped as a whole on reload.

A request holds on to the ``Runtime`` it started with, so replacing ``RuntimeHolder.current``
never changes a request midway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import (
    ConfigError,
    GatewayConfig,
    LoadedConfig,
    TenantConfig,
    TierConfig,
    UpstreamConfig,
)
from gateway.keys import KeyRing, build_keyring
from gateway.ledger import Ledger
from gateway.pipeline.masking import TenantMasking, build_tenant_masking
from gateway.pricing import PriceTable
from gateway.routing.classifier import DifficultyClassifier, default_classifier
from gateway.routing.health import TierHealth
from gateway.routing.policy import RoutingState
from gateway.tiers.base import Tier
from gateway.tiers.openai_compatible import OpenAICompatibleTier
from gateway.tokens import TokenCounter

if TYPE_CHECKING:
    # Not at run time: the matcher imports numpy (~15 MiB of resident memory), which a gateway
    # whose tenants use no approved answers never needs (build_answer_layers imports it).
    from gateway.answers.matcher import ApprovedAnswers


@dataclass(frozen=True, slots=True)
class Runtime:
    loaded: LoadedConfig
    keys: KeyRing
    tiers: Mapping[str, Tier]
    ledger: Ledger
    tokens: TokenCounter
    # What the router needs besides the request; fixed for the life of this runtime.
    routing_state: RoutingState
    # The model behind POST /v1/embeddings, if one is configured.
    embeddings: OpenAICompatibleTier | None = None
    # Outcomes of tier calls; carried over to the next runtime on reload.
    health: TierHealth = field(default_factory=TierHealth)
    # Per tenant that masks personal values (safety.masking.enabled): its masker.
    masking: Mapping[str, TenantMasking] = field(default_factory=dict)
    # Per tenant with `answers`: its approved answers and their matcher; None when no tenant
    # has `answers` (the matcher and numpy are then never imported).
    answers: ApprovedAnswers | None = None
    # Per tenant with a semantic-cache `secret_env`: the key of its entity hashes.
    semantic_secrets: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    @property
    def prices(self) -> PriceTable:
        return self.loaded.prices

    def tenant(self, name: str) -> TenantConfig:
        return self.loaded.config.tenants[name]

    def baseline_model(self, tenant: str) -> str:
        """The model whose prices are the tenant's "everything on the large model" baseline."""
        return self.loaded.model_of(self.loaded.baseline_tier(tenant))

    def output_cap(self, tier: str) -> int | None:
        return self.loaded.config.tiers.configured()[tier].max_output_tokens


def routing_state(loaded: LoadedConfig, tiers: frozenset[str]) -> RoutingState:
    return RoutingState(
        available_tiers=tiers,
        capabilities={t: loaded.capabilities(t) for t in tiers},
        fallback_order={t: tuple(loaded.fallbacks(t)) for t in tiers},
        classifier=load_classifier(loaded),
    )


def load_classifier(loaded: LoadedConfig) -> DifficultyClassifier | None:
    cfg = loaded.config.router.classifier
    if cfg is None or not cfg.enabled:
        return None
    if not cfg.weights:
        return default_classifier()
    return DifficultyClassifier.load(Path(cfg.weights).expanduser())


def build_tiers(config: GatewayConfig, env: Mapping[str, str]) -> dict[str, Tier]:
    """The configured tiers; provider keys are read from ``env`` once, here."""
    return {
        name: build_tier(name, tier, config.upstreams[tier.upstream], env)
        for name, tier in config.tiers.configured().items()
    }


def build_tier(
    name: str, tier: TierConfig, upstream: UpstreamConfig, env: Mapping[str, str]
) -> Tier:
    api_key = env.get(upstream.api_key_env) if upstream.api_key_env else None
    if upstream.kind == "llama_cpp":
        # Imported here: llama.cpp and its model load only when a config asks for them.
        from gateway.tiers.llama_cpp import LlamaCppTier

        return LlamaCppTier(
            name=name,
            model=tier.model,
            model_file=upstream.model_file,
            threads=upstream.threads,
            context_tokens=upstream.context_tokens,
            queue_limit=upstream.queue_limit,
            queue_timeout_s=upstream.queue_timeout_s,
            request_timeout_s=upstream.read_timeout_s,
        )
    if upstream.kind == "litellm":
        from gateway.tiers.litellm_provider import LitellmTier

        return LitellmTier(
            name=name,
            model=tier.model,
            api_key=api_key,
            api_base=upstream.base_url,
            timeout_s=upstream.read_timeout_s,
        )
    assert upstream.base_url is not None  # UpstreamConfig checks this for `openai`
    return OpenAICompatibleTier(
        name=name,
        model=tier.model,
        upstream_name=tier.upstream,
        base_url=upstream.base_url,
        api_key_env=upstream.api_key_env,
        api_key=api_key,
        connect_timeout_s=upstream.connect_timeout_s,
        read_timeout_s=upstream.read_timeout_s,
        max_connections=upstream.max_connections,
        extra_headers=upstream.headers,
    )


def build_runtime(
    loaded: LoadedConfig,
    *,
    data_dir: Path,
    ledger: Ledger,
    env: Mapping[str, str],
    announce: Callable[[str], None],
    warn: Callable[[str], None],
    tiers: Mapping[str, Tier] | None = None,
    tokens: TokenCounter | None = None,
    health: TierHealth | None = None,
) -> Runtime:
    keys = build_keyring(loaded.config, data_dir=data_dir, env=env, announce=announce, warn=warn)
    try:
        masking = build_tenant_masking(loaded.config, env)
    except ValueError as exc:  # a named masking secret is not set: fail at start, not per request
        raise ConfigError(f"{loaded.source}: {exc}") from None
    answers, semantic_secrets = build_answer_layers(loaded, env)
    if tiers is None:
        tiers = build_tiers(loaded.config, env)
    return Runtime(
        loaded=loaded,
        keys=keys,
        tiers=tiers,
        ledger=ledger,
        tokens=tokens or TokenCounter(),
        routing_state=routing_state(loaded, frozenset(tiers)),
        embeddings=build_embeddings(loaded.config, env),
        health=configured_health(loaded, health),
        masking=masking,
        answers=answers,
        semantic_secrets=semantic_secrets,
    )


def build_answer_layers(
    loaded: LoadedConfig, env: Mapping[str, str]
) -> tuple[ApprovedAnswers | None, dict[str, bytes]]:
    """The tenants' approved answers (their models read now; None when no tenant has
    ``answers``) and semantic-cache keys; raises ``ConfigError`` naming the tenant's key and the
    fix."""
    from gateway.pipeline.semantic import tenant_secrets

    config = loaded.config
    opted_in = {t: tc.answers for t, tc in config.tenants.items() if tc.answers is not None}
    answers: ApprovedAnswers | None = None
    if opted_in:
        # Imported here, not at module level: the matcher and its model import numpy (~15 MiB
        # of resident memory), and most configs give no tenant approved answers.
        from gateway.answers.loading import AnswersConfigError, load_approved_answers

        try:
            answers = load_approved_answers(opted_in)
        except AnswersConfigError as exc:
            raise ConfigError(f"{loaded.source}: {exc.field}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{loaded.source}: {exc}") from None
    try:
        secrets = tenant_secrets(config, env)
    except ValueError as exc:  # a named semantic-cache secret is not set
        raise ConfigError(f"{loaded.source}: {exc}") from None
    return answers, secrets


def needs_embedder(config: GatewayConfig) -> bool:
    """Does any tenant use approved answers or the semantic cache (both embed text)?"""
    return any(
        tc.answers is not None or tc.semantic_cache.enabled for tc in config.tenants.values()
    )


def configured_health(loaded: LoadedConfig, previous: TierHealth | None) -> TierHealth:
    """The health tracker with this config's thresholds, keeping what ``previous`` observed."""
    cfg = loaded.config.router.health
    health = previous or TierHealth()
    health.failures = cfg.failures
    health.cooldown_s = cfg.cooldown_s
    return health


def build_embeddings(config: GatewayConfig, env: Mapping[str, str]) -> OpenAICompatibleTier | None:
    emb = config.embeddings
    if emb is None:
        return None
    upstream = config.upstreams[emb.upstream]
    assert upstream.base_url is not None  # the config requires an `openai` upstream here
    return OpenAICompatibleTier(
        name="embeddings",
        model=emb.model,
        upstream_name=emb.upstream,
        base_url=upstream.base_url,
        api_key_env=upstream.api_key_env,
        api_key=env.get(upstream.api_key_env) if upstream.api_key_env else None,
        connect_timeout_s=upstream.connect_timeout_s,
        read_timeout_s=upstream.read_timeout_s,
        max_connections=upstream.max_connections,
        extra_headers=upstream.headers,
    )


class RuntimeHolder:
    """The current runtime; ``swap`` replaces it as one object (hot reload uses this)."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime

    def swap(self, runtime: Runtime) -> Runtime:
        old, self.current = self.current, runtime
        return old
