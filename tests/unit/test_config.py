from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config import ConfigError, LoadedConfig, load_config, parse_config
from gateway.pricing import FREE, ModelPrice

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((REPO / "config").glob("**/*.yaml"))

# What the shipped examples say they need (config/examples/*.yaml headers). config/gateway.yaml
# reads the same SMALL_MODEL / LARGE_MODEL with a remote large tier, so LARGE_MODEL must be a
# model litellm can price.
EXAMPLE_ENV = {
    "UPSTREAM_BASE_URL": "http://127.0.0.1:8000/v1",
    "SMALL_MODEL": "qwen2.5:7b-instruct",
    "LARGE_MODEL": "gpt-4o",
    "DEMO_API_KEY": "sk-demo-0123456789",
    "DEMO_DAILY_LIMIT_USD": "0.05",
}

# A small valid config: a local upstream, so the made-up model names need no price.
VALID = """
upstreams:
  local:
    base_url: http://127.0.0.1:11434/v1
    local: true
tiers:
  small:
    upstream: local
    model: tiny
    max_output_tokens: 256
  large:
    upstream: local
    model: big
models:
  auto: { route: auto }
  pinned: { route: large }
router:
  default: small
  rules:
    - name: tools
      when: { has_tools: true }
      route: large
tenants:
  acme:
    keys: [{ env: ACME_KEY }]
"""


def parse(text: str, **env: str) -> LoadedConfig:
    return parse_config(text, source="x.yaml", env=env)


def config_error(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **env)
    return str(info.value)


def test_the_repository_ships_config_files() -> None:
    names = {p.relative_to(REPO).as_posix() for p in SHIPPED_CONFIGS}
    assert {
        "config/gateway.yaml",
        "config/examples/openai-compatible.yaml",
        "config/examples/budget-demo.yaml",
    } <= names


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_shipped_config_file_loads(path: Path) -> None:
    loaded = load_config(path, env=EXAMPLE_ENV)
    assert loaded.source == str(path)
    assert loaded.config.tenants
    for tier in loaded.config.tiers.configured():
        assert loaded.tier_price(tier).input_per_token >= 0


def test_the_embedded_default_routes_small_locally_for_free_and_large_to_openai() -> None:
    loaded = load_config(REPO / "config" / "gateway.yaml", env={})
    assert loaded.model_of("small") == "smollm2-135m-instruct"
    assert loaded.config.upstreams["local"].kind == "llama_cpp"
    caps = loaded.capabilities("small")
    assert (caps.tools, caps.images, caps.context_window) == (False, False, 2048)
    assert loaded.fallbacks("small") == ["large"]
    assert loaded.model_of("large") == "gpt-4o"
    assert loaded.tier_price("small") == FREE
    assert loaded.tier_price("large").input_per_token > 0
    assert loaded.config.router.default == "small"


def test_a_valid_config_parses_with_its_values() -> None:
    loaded = parse(VALID)
    config = loaded.config
    assert loaded.source == "x.yaml"
    assert config.tiers.configured()["small"].max_output_tokens == 256
    assert config.router.rules[0].route == "large"
    assert list(config.models) == ["auto", "pinned"]
    assert config.tenants["acme"].keys[0].env == "ACME_KEY"


def test_unknown_tier_in_a_rule_route_names_the_path_and_lists_known_tiers() -> None:
    message = config_error(VALID.replace("route: large\ntenants", "route: lagre\ntenants"))
    assert message.startswith("x.yaml: $.router.rules[0].route: ")
    assert "'lagre'" in message
    assert "known: small, large" in message


def test_unknown_default_tier_names_the_router_default() -> None:
    message = config_error(VALID.replace("default: small", "default: medium"))
    assert message.startswith("x.yaml: $.router.default: ")
    assert "'medium'" in message


def test_unknown_upstream_in_a_tier_names_the_tier_and_lists_known_upstreams() -> None:
    text = VALID.replace("upstream: local\n    model: big", "upstream: remote\n    model: big")
    message = config_error(text)
    assert message.startswith("x.yaml: $.tiers.large.upstream: ")
    assert "'remote'" in message
    assert "known: local" in message


def test_a_typo_in_a_tenant_names_the_tenant_key_and_the_field() -> None:
    text = VALID.replace(
        "keys: [{ env: ACME_KEY }]", "keys: [{ env: ACME_KEY }]\n    alow_pin: true"
    )
    message = config_error(text)
    assert message.startswith("x.yaml: $.tenants.acme: ")
    assert "unknown field `alow_pin`" in message


def test_a_typo_in_an_upstream_names_the_upstream_key() -> None:
    message = config_error(VALID.replace("local: true", "local: true\n    timeout: 3"))
    assert message.startswith("x.yaml: $.upstreams.local: ")
    assert "unknown field `timeout`" in message


def test_a_wrong_type_names_the_field_and_the_expected_type() -> None:
    message = config_error(VALID.replace("max_output_tokens: 256", "max_output_tokens: 0"))
    assert message == "x.yaml: $.tiers.small.max_output_tokens: Expected `int` >= 1"


def test_a_string_where_a_number_belongs_is_a_type_error() -> None:
    message = config_error(VALID.replace("max_output_tokens: 256", "max_output_tokens: many"))
    assert message == ("x.yaml: $.tiers.small.max_output_tokens: Expected `int | null`, got `str`")


def test_an_unpriced_model_names_the_tier_model_and_suggests_close_names() -> None:
    text = VALID.replace(
        "upstream: local\n    model: big",
        "upstream: openai\n    model: gpt-4oo",
    ).replace("upstreams:", "upstreams:\n  openai:\n    base_url: https://api.openai.com/v1")
    message = config_error(text)
    assert message.startswith("x.yaml: $.tiers.large.model: no price for model 'gpt-4oo'")
    assert "did you mean 'gpt-4o'" in message
    assert "local: true" in message
    assert "price:" in message


def test_an_unset_variable_names_the_variable_and_the_path() -> None:
    message = config_error(VALID.replace("model: tiny", "model: ${SMALL_MODEL}"))
    assert message.startswith("x.yaml: $.tiers.small.model: ")
    assert "SMALL_MODEL is not set" in message
    assert "${SMALL_MODEL:-default}" in message


def test_an_empty_variable_counts_as_unset() -> None:
    message = config_error(VALID.replace("model: tiny", "model: ${SMALL_MODEL}"), SMALL_MODEL="")
    assert "SMALL_MODEL is not set" in message


def test_a_set_variable_is_substituted() -> None:
    loaded = parse(VALID.replace("model: tiny", "model: ${SMALL_MODEL}"), SMALL_MODEL="qwen")
    assert loaded.model_of("small") == "qwen"


def test_a_variable_default_is_used_when_the_variable_is_unset() -> None:
    loaded = parse(VALID.replace("model: tiny", "model: ${SMALL_MODEL:-phi-mini}"))
    assert loaded.model_of("small") == "phi-mini"


def test_a_variable_inside_a_longer_string_is_substituted() -> None:
    text = VALID.replace("http://127.0.0.1:11434/v1", "http://${HOST:-localhost}:${PORT}/v1")
    loaded = parse(text, PORT="9000")
    assert loaded.config.upstreams["local"].base_url == "http://localhost:9000/v1"


def test_numbers_from_environment_variables_are_accepted() -> None:
    text = VALID.replace(
        "local: true", "local: true\n    connect_timeout_s: ${TIMEOUT}\n    max_connections: ${N}"
    )
    upstream = parse(text, TIMEOUT="5", N="12").config.upstreams["local"]
    assert upstream.connect_timeout_s == 5.0
    assert isinstance(upstream.connect_timeout_s, float)
    assert upstream.max_connections == 12


def test_a_non_numeric_environment_value_for_a_number_names_the_path() -> None:
    text = VALID.replace("local: true", "local: true\n    connect_timeout_s: ${TIMEOUT}")
    message = config_error(text, TIMEOUT="soon")
    assert message.startswith("x.yaml: $.upstreams.local.connect_timeout_s: Expected `float`")


def test_invalid_yaml_names_the_file() -> None:
    message = config_error("tiers: [small\n")
    assert message.startswith("x.yaml: not valid YAML: ")


def test_a_document_that_is_not_a_mapping_is_rejected() -> None:
    message = config_error("- just\n- a list\n")
    assert message == "x.yaml: expected a mapping at the top level, got list"


def test_a_key_with_both_sha256_and_env_is_rejected() -> None:
    text = VALID.replace("{ env: ACME_KEY }", "{ env: ACME_KEY, sha256: " + "a" * 64 + " }")
    message = config_error(text)
    assert message.startswith("x.yaml: $.tenants.acme.keys[0]: ")
    assert "exactly one of `sha256`" in message


def test_a_key_with_neither_sha256_nor_env_is_rejected() -> None:
    message = config_error(VALID.replace("{ env: ACME_KEY }", "{}"))
    assert message.startswith("x.yaml: $.tenants.acme.keys[0]: ")
    assert "exactly one of `sha256`" in message


@pytest.mark.parametrize("digest", ["abc123", "A" * 64, "g" * 64, "a" * 65])
def test_a_malformed_sha256_is_rejected_with_the_fix(digest: str) -> None:
    message = config_error(VALID.replace("{ env: ACME_KEY }", "{ sha256: " + digest + " }"))
    assert message.startswith("x.yaml: $.tenants.acme.keys[0]: ")
    assert "64 lower-case hex digits" in message
    assert "gateway keys create" in message


def test_a_well_formed_sha256_is_accepted() -> None:
    loaded = parse(VALID.replace("{ env: ACME_KEY }", "{ sha256: " + "0f" * 32 + " }"))
    assert loaded.config.tenants["acme"].keys[0].sha256 == "0f" * 32


def test_generate_if_unset_without_env_is_rejected() -> None:
    text = VALID.replace(
        "{ env: ACME_KEY }", "{ sha256: " + "0f" * 32 + ", generate_if_unset: true }"
    )
    message = config_error(text)
    assert message.startswith("x.yaml: $.tenants.acme.keys[0]: ")
    assert "`generate_if_unset` needs `env`" in message


def test_a_tenant_restricted_to_an_unknown_model_lists_the_known_models() -> None:
    text = VALID.replace(
        "keys: [{ env: ACME_KEY }]", "keys: [{ env: ACME_KEY }]\n    models: [gpt-5]"
    )
    message = config_error(text)
    assert message.startswith("x.yaml: $.tenants.acme.models[0]: unknown model 'gpt-5'")
    assert "auto, pinned" in message


def test_an_alias_pinning_an_unknown_tier_lists_the_routes() -> None:
    message = config_error(VALID.replace("pinned: { route: large }", "pinned: { route: huge }"))
    assert message.startswith("x.yaml: $.models.pinned.route: unknown route 'huge'")
    assert "known: auto, small, large" in message


def test_a_tenant_without_keys_is_rejected() -> None:
    message = config_error(VALID.replace("keys: [{ env: ACME_KEY }]", "keys: []"))
    assert message.startswith("x.yaml: $.tenants.acme.keys: ")


def test_a_config_without_tenants_is_rejected() -> None:
    message = config_error(VALID.replace("  acme:\n    keys: [{ env: ACME_KEY }]\n", "  {}\n"))
    assert message.startswith("x.yaml: $.tenants: ")


def test_a_base_url_without_scheme_is_rejected() -> None:
    message = config_error(VALID.replace("http://127.0.0.1:11434/v1", "127.0.0.1:11434"))
    assert message.startswith("x.yaml: $.upstreams.local: ")
    assert "http:// or https://" in message


def test_a_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: cannot read the config file")


def test_load_config_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(VALID.replace("default: small", "default: medium"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: $.router.default: ")


def test_a_local_upstream_makes_an_unpriced_model_free() -> None:
    loaded = parse(VALID)
    assert loaded.tier_price("small") == FREE
    assert loaded.tier_price("large") == FREE


def test_the_same_unpriced_model_on_a_remote_upstream_is_an_error() -> None:
    message = config_error(VALID.replace("local: true", "local: false"))
    assert message.startswith("x.yaml: $.tiers.small.model: no price for model 'tiny'")


def test_a_tier_price_overrides_local_and_litellm() -> None:
    text = VALID.replace(
        "model: big", "model: big\n    price: { input_usd_per_mtok: 0.5, output_usd_per_mtok: 1.5 }"
    )
    price = parse(text).tier_price("large")
    assert price == ModelPrice.per_million(Decimal("0.5"), Decimal("1.5"))
    assert price.output_per_token == Decimal("0.0000015")


def test_prices_section_overrides_litellm() -> None:
    remote = VALID.replace(
        "upstreams:", "upstreams:\n  openai:\n    base_url: https://api.openai.com/v1"
    ).replace("upstream: local\n    model: big", "upstream: openai\n    model: gpt-4o")
    litellm_price = parse(remote).tier_price("large")
    overridden = parse(
        remote + "prices:\n  gpt-4o: { input_usd_per_mtok: 1, output_usd_per_mtok: 2 }\n"
    ).tier_price("large")
    assert overridden == ModelPrice.per_million(1, 2)
    assert overridden != litellm_price


def test_prices_section_prices_a_model_litellm_does_not_know() -> None:
    text = VALID.replace("local: true", "local: false") + (
        "prices:\n"
        "  tiny: { input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2 }\n"
        "  big: { input_usd_per_mtok: 3, output_usd_per_mtok: 6 }\n"
    )
    loaded = parse(text)
    assert loaded.tier_price("small") == ModelPrice.per_million(Decimal("0.1"), Decimal("0.2"))
    assert loaded.tier_price("large") == ModelPrice.per_million(3, 6)


def test_a_negative_price_is_rejected() -> None:
    text = VALID + "prices:\n  big: { input_usd_per_mtok: -1, output_usd_per_mtok: 2 }\n"
    message = config_error(text)
    assert message.startswith("x.yaml: $.prices.big: ")
    assert ">= 0" in message


def test_at_least_one_tier_is_required() -> None:
    text = (
        "tiers: {}\nrouter: { default: small }\ntenants:\n  acme: { keys: [{ env: ACME_KEY }] }\n"
    )
    message = config_error(text)
    assert message.startswith("x.yaml: $.tiers: ")
    assert "at least one tier" in message


def test_the_openai_compatible_example_takes_its_upstream_and_models_from_the_environment() -> None:
    loaded = load_config(REPO / "config" / "examples" / "openai-compatible.yaml", env=EXAMPLE_ENV)
    config = loaded.config
    assert config.upstreams["upstream"].base_url == "http://127.0.0.1:8000/v1"
    assert loaded.model_of("small") == "qwen2.5:7b-instruct"
    assert loaded.model_of("large") == "gpt-4o"
    # The example prices both tiers at 0 explicitly, overriding litellm's gpt-4o price.
    assert loaded.tier_price("large") == ModelPrice.per_million(0, 0)
    assert config.tenants["demo"].keys[0].env == "DEMO_API_KEY"


def test_an_empty_file_says_so() -> None:
    message = config_error("# nothing but a comment\n")
    assert message.startswith("x.yaml: the file is empty")


def test_a_file_that_is_not_utf8_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(VALID.replace("tiny", "tiñy").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: not UTF-8 text")
    assert "save the file as UTF-8" in message


def test_the_budget_demo_reads_its_limit_and_state_backend_from_the_environment() -> None:
    path = REPO / "config" / "examples" / "budget-demo.yaml"
    embedded = load_config(path, env=EXAMPLE_ENV).config
    shared = load_config(path, env={**EXAMPLE_ENV, "STATE_BACKEND": "redis"}).config

    budget = embedded.tenants["demo"].budget
    assert budget is not None
    assert (budget.daily_limit, budget.currency, budget.hard_action) == (
        Decimal("0.05"),
        "USD",
        "reject",
    )
    assert (embedded.state, shared.state) == ("embedded", "redis")
    with pytest.raises(ConfigError, match="DEMO_DAILY_LIMIT_USD"):
        load_config(path, env={k: v for k, v in EXAMPLE_ENV.items() if k != "DEMO_DAILY_LIMIT_USD"})


def with_budget(budget: str) -> str:
    """VALID with a ``budget:`` block (inline YAML) for tenant acme."""
    return VALID.replace(
        "    keys: [{ env: ACME_KEY }]\n",
        f"    keys: [{{ env: ACME_KEY }}]\n    budget: {budget}\n",
    )


def test_a_model_limit_must_name_a_tier_model() -> None:
    message = config_error(with_budget("{model_limits: {gpt-4o: {daily: 1}}}"))
    assert message.startswith("x.yaml: $.tenants.acme.budget.model_limits.gpt-4o: ")
    assert "known models: big, tiny" in message


def test_a_bad_choice_lists_the_allowed_values() -> None:
    message = config_error(with_budget("{daily_limit: 1, hard_action: rejet}"))
    assert message == (
        "x.yaml: $.tenants.acme.budget.hard_action: Invalid enum value 'rejet'; "
        "expected one of: reject, cache_only"
    )
    message = config_error(VALID + "state: redys\n")
    assert message.endswith("Invalid enum value 'redys'; expected one of: embedded, redis")
