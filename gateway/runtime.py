"""Everything a request needs, built from one loaded config: swapped as a whole on reload.

A request holds on to the ``Runtime`` it started with, so replacing ``RuntimeHolder.current``
never changes a request midway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig, LoadedConfig, TenantConfig
from gateway.keys import KeyRing, build_keyring
from gateway.ledger import Ledger
from gateway.pricing import PriceTable
from gateway.tiers.base import Tier
from gateway.tiers.openai_compatible import OpenAICompatibleTier
from gateway.tokens import TokenCounter


@dataclass(frozen=True, slots=True)
class Runtime:
    loaded: LoadedConfig
    keys: KeyRing
    tiers: Mapping[str, Tier]
    ledger: Ledger
    tokens: TokenCounter

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    @property
    def prices(self) -> PriceTable:
        return self.loaded.prices

    def tenant(self, name: str) -> TenantConfig:
        return self.loaded.config.tenants[name]

    def baseline_model(self, tier: str) -> str:
        return self.loaded.model_of(tier)

    def output_cap(self, tier: str) -> int | None:
        return self.loaded.config.tiers.configured()[tier].max_output_tokens


def build_tiers(config: GatewayConfig, env: Mapping[str, str]) -> dict[str, Tier]:
    """The configured tiers; provider keys are read from ``env`` once, here."""
    tiers: dict[str, Tier] = {}
    for name, tier in config.tiers.configured().items():
        upstream = config.upstreams[tier.upstream]
        tiers[name] = OpenAICompatibleTier(
            name=name,
            model=tier.model,
            upstream_name=tier.upstream,
            base_url=upstream.base_url,
            api_key_env=upstream.api_key_env,
            api_key=env.get(upstream.api_key_env) if upstream.api_key_env else None,
            connect_timeout_s=upstream.connect_timeout_s,
            read_timeout_s=upstream.read_timeout_s,
            max_connections=upstream.max_connections,
            extra_headers=upstream.headers,
        )
    return tiers


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
) -> Runtime:
    keys = build_keyring(loaded.config, data_dir=data_dir, env=env, announce=announce, warn=warn)
    return Runtime(
        loaded=loaded,
        keys=keys,
        tiers=tiers if tiers is not None else build_tiers(loaded.config, env),
        ledger=ledger,
        tokens=tokens or TokenCounter(),
    )


class RuntimeHolder:
    """The current runtime; ``swap`` replaces it as one object (hot reload uses this)."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime

    def swap(self, runtime: Runtime) -> Runtime:
        old, self.current = self.current, runtime
        return old
