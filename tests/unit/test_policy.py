from __future__ import annotations

import pytest

from gateway.config import GatewayConfig, TenantConfig, parse_config
from gateway.errors import ModelNotFound
from gateway.routing.policy import (
    RouteRequest,
    RoutingDecision,
    RoutingState,
    allowed_models,
    decide,
)

CONFIG = """
upstreams:
  local: { base_url: "http://127.0.0.1:11434/v1", local: true }
tiers:
  small: { upstream: local, model: tiny }
  large: { upstream: local, model: big }
models:
  auto: { route: auto }
  gpt-4o-mini: { route: auto }
  gpt-4o: { route: large }
  small-only: { route: small }
router:
  default: small
  rules:
    - name: long-prompt
      when: { prompt_tokens_over: 1000 }
      route: large
    - name: sensitive
      when: { keywords_any: [Refund, lawyer, 退款] }
      route: large
    - when: { has_tools: true }
      route: large
    - name: long-chat
      when: { min_turns: 8 }
      route: large
tenants:
  acme:
    keys: [{ env: ACME_KEY }]
  globex:
    keys: [{ env: GLOBEX_KEY }]
    models: [auto, gpt-4o]
    allow_pin: false
"""

BOTH = RoutingState(available_tiers=frozenset({"small", "large"}))


@pytest.fixture(scope="module")
def config() -> GatewayConfig:
    return parse_config(CONFIG, source="policy.yaml", env={}).config


def request(
    model: str = "auto",
    *,
    prompt_tokens: int = 50,
    text: str = "Where is my parcel?",
    turns: int = 1,
    has_tools: bool = False,
    has_images: bool = False,
) -> RouteRequest:
    return RouteRequest(
        requested_model=model,
        prompt_tokens=prompt_tokens,
        last_user_text=text,
        turns=turns,
        has_tools=has_tools,
        has_images=has_images,
    )


def run(
    config: GatewayConfig,
    req: RouteRequest,
    tenant: str = "acme",
    state: RoutingState = BOTH,
) -> RoutingDecision:
    return decide(req, config.tenants[tenant], state, config)


def test_a_plain_request_gets_the_default_tier_with_a_reason(config: GatewayConfig) -> None:
    decision = run(config, request())
    assert decision.route == "small"
    assert decision.reasons == ("no rule matched: default tier",)
    assert decision.pinned is False


def test_a_pinned_alias_goes_to_its_tier_when_the_tenant_may_pin(config: GatewayConfig) -> None:
    # Even a request a rule would send elsewhere: the pin wins.
    decision = run(config, request("small-only", prompt_tokens=5000))
    assert decision.route == "small"
    assert decision.pinned is True
    assert decision.reasons == ("model 'small-only' pins the small tier",)


def test_a_pinned_alias_to_large_goes_to_large(config: GatewayConfig) -> None:
    decision = run(config, request("gpt-4o"))
    assert decision.route == "large"
    assert decision.pinned is True
    assert "pins the large tier" in decision.reasons[0]


def test_a_tenant_that_may_not_pin_gets_the_router_decision(config: GatewayConfig) -> None:
    decision = run(config, request("gpt-4o"), tenant="globex")
    assert decision.route == "small"
    assert decision.pinned is False
    assert decision.reasons == (
        "model 'gpt-4o' pins large, but this tenant may not pin",
        "no rule matched: default tier",
    )


def test_a_tenant_that_may_not_pin_still_gets_rules(config: GatewayConfig) -> None:
    decision = run(config, request("gpt-4o", prompt_tokens=2000), tenant="globex")
    assert decision.route == "large"
    assert decision.pinned is False
    assert "may not pin" in decision.reasons[0]
    assert decision.reasons[1] == "rule 'long-prompt': prompt_tokens 2000 > 1000"


def test_a_pin_to_an_unavailable_tier_falls_through_to_the_router(config: GatewayConfig) -> None:
    state = RoutingState(available_tiers=frozenset({"large"}))
    decision = run(config, request("small-only"), state=state)
    assert decision.pinned is False
    assert decision.reasons[0] == "model 'small-only' pins small, which is unavailable"
    assert decision.route == "large"


def test_prompt_tokens_over_matches_only_above_the_threshold(config: GatewayConfig) -> None:
    assert run(config, request(prompt_tokens=1000)).route == "small"
    decision = run(config, request(prompt_tokens=1001))
    assert decision.route == "large"
    assert decision.reasons == ("rule 'long-prompt': prompt_tokens 1001 > 1000",)


def test_a_chinese_keyword_matches_chinese_text(config: GatewayConfig) -> None:
    decision = run(config, request(text="我要退款，东西坏了"))
    assert decision.route == "large"
    assert decision.reasons == ("rule 'sensitive': keyword '退款'",)


def test_english_keywords_match_case_insensitively(config: GatewayConfig) -> None:
    decision = run(config, request(text="I want a REFUND now"))
    assert decision.route == "large"
    assert decision.reasons == ("rule 'sensitive': keyword 'Refund'",)
    assert run(config, request(text="my Lawyer says")).route == "large"


def test_text_without_any_keyword_gets_the_default(config: GatewayConfig) -> None:
    assert run(config, request(text="thanks, bye")).route == "small"


def test_has_tools_matches_and_an_unnamed_rule_is_labelled_by_index(
    config: GatewayConfig,
) -> None:
    decision = run(config, request(has_tools=True))
    assert decision.route == "large"
    assert decision.reasons == ("rule 'rules[2]': tools requested",)


def test_min_turns_matches_from_the_threshold(config: GatewayConfig) -> None:
    assert run(config, request(turns=7)).route == "small"
    decision = run(config, request(turns=8))
    assert decision.route == "large"
    assert decision.reasons == ("rule 'long-chat': turns 8 >= 8",)


def test_the_first_matching_rule_wins(config: GatewayConfig) -> None:
    decision = run(config, request(prompt_tokens=5000, text="退款", has_tools=True, turns=20))
    assert decision.reasons == ("rule 'long-prompt': prompt_tokens 5000 > 1000",)


def test_a_rule_to_an_unavailable_tier_falls_through_to_the_default(
    config: GatewayConfig,
) -> None:
    state = RoutingState(available_tiers=frozenset({"small"}))
    decision = run(config, request(prompt_tokens=5000), state=state)
    assert decision.route == "small"
    assert decision.reasons == (
        "rule 'long-prompt' matched (prompt_tokens 5000 > 1000) but large is unavailable",
        "no rule matched: default tier",
    )


def test_an_unavailable_default_falls_back_to_an_available_tier(config: GatewayConfig) -> None:
    state = RoutingState(available_tiers=frozenset({"large"}))
    decision = run(config, request(), state=state)
    assert decision.route == "large"
    assert decision.reasons == ("default tier small unavailable; using large",)


def test_no_available_tier_is_an_error(config: GatewayConfig) -> None:
    with pytest.raises(ModelNotFound):
        run(config, request(), state=RoutingState(available_tiers=frozenset()))


def test_conditions_in_one_rule_must_all_hold() -> None:
    text = CONFIG.replace(
        "when: { prompt_tokens_over: 1000 }",
        "when: { prompt_tokens_over: 1000, has_tools: true }",
    )
    config = parse_config(text, source="policy.yaml", env={}).config
    assert run(config, request(prompt_tokens=5000)).route == "small"
    decision = run(config, request(prompt_tokens=5000, has_tools=True))
    assert decision.reasons == ("rule 'long-prompt': prompt_tokens 5000 > 1000, tools requested",)


def test_prompt_tokens_under_matches_only_below_the_threshold() -> None:
    text = CONFIG.replace("when: { prompt_tokens_over: 1000 }", "when: { prompt_tokens_under: 10 }")
    config = parse_config(text, source="policy.yaml", env={}).config
    assert run(config, request(prompt_tokens=10)).route == "small"
    decision = run(config, request(prompt_tokens=9))
    assert decision.route == "large"
    assert decision.reasons == ("rule 'long-prompt': prompt_tokens 9 < 10",)


def test_an_unknown_model_lists_the_models_the_tenant_may_use(config: GatewayConfig) -> None:
    with pytest.raises(ModelNotFound) as info:
        run(config, request("gpt-5"))
    error = info.value
    assert error.status == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert "'gpt-5'" in error.message
    assert error.message.endswith("models available: auto, gpt-4o-mini, gpt-4o, small-only")


def test_a_model_outside_the_tenant_restriction_is_not_found(config: GatewayConfig) -> None:
    with pytest.raises(ModelNotFound) as info:
        run(config, request("gpt-4o-mini"), tenant="globex")
    assert "'gpt-4o-mini'" in info.value.message
    assert info.value.message.endswith("models available: auto, gpt-4o")


def test_allowed_models_follow_config_order(config: GatewayConfig) -> None:
    assert allowed_models(config, config.tenants["acme"]) == [
        "auto",
        "gpt-4o-mini",
        "gpt-4o",
        "small-only",
    ]
    restricted = TenantConfig(keys=config.tenants["globex"].keys, models=["gpt-4o", "auto"])
    assert allowed_models(config, restricted) == ["auto", "gpt-4o"]


def test_the_decision_carries_the_request_features(config: GatewayConfig) -> None:
    decision = run(config, request(prompt_tokens=123, turns=3, has_tools=False, has_images=True))
    assert dict(decision.features) == {
        "prompt_tokens": 123,
        "turns": 3,
        "has_tools": False,
        "has_images": True,
    }


def test_a_pinned_decision_carries_the_features_too(config: GatewayConfig) -> None:
    decision = run(config, request("gpt-4o", prompt_tokens=7, has_tools=True))
    assert decision.features["prompt_tokens"] == 7
    assert decision.features["has_tools"] is True


def test_regex_any_matches_and_names_the_match() -> None:
    text = CONFIG.replace(
        "when: { prompt_tokens_over: 1000 }",
        r"when: { regex_any: ['order\s*#?\d{6,}', '订单号?\s*\d+'] }",
    )
    config = parse_config(text, source="policy.yaml", env={}).config
    assert run(config, request(text="where is my parcel")).route == "small"
    decision = run(config, request(text="Where is ORDER #1234567 now?"))
    assert decision.route == "large"
    assert decision.reasons == (
        "rule 'long-prompt': regex 'order\\\\s*#?\\\\d{6,}' matched 'ORDER #1234567'",
    )
    assert run(config, request(text="我的订单号 889900 到哪了")).route == "large"


def test_an_invalid_regex_is_a_config_error_naming_the_rule() -> None:
    from gateway.config import ConfigError

    text = CONFIG.replace(
        "when: { prompt_tokens_over: 1000 }", "when: { regex_any: ['(unclosed'] }"
    )
    with pytest.raises(ConfigError, match=r"\$.router.rules\[0\].when.*not a valid regular"):
        parse_config(text, source="policy.yaml", env={})


def test_has_images_matches_requests_with_images() -> None:
    text = CONFIG.replace("when: { prompt_tokens_over: 1000 }", "when: { has_images: true }")
    config = parse_config(text, source="policy.yaml", env={}).config
    assert run(config, request()).route == "small"
    decision = run(config, request(has_images=True))
    assert decision.reasons == ("rule 'long-prompt': images attached",)
