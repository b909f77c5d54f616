"""The `budget:` and `rate_limits:` blocks: defaults, conversions, and errors that name the fix."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import yaml

from gateway.budget import (
    BudgetConfig,
    RateLimitsConfig,
    Scope,
    ScopeState,
    budget_scopes,
    rate_counter_key,
    retry_after_s,
)


def budget(text: str) -> BudgetConfig:
    # As gateway.config loads it: YAML, then msgspec with strict=False (values from ${VAR}).
    data: Any = yaml.safe_load(text) or {}
    return msgspec.convert(data, BudgetConfig, strict=False)


def error_of(text: str) -> str:
    with pytest.raises(msgspec.ValidationError) as info:
        budget(text)
    return str(info.value)


def test_an_empty_budget_is_usd_in_utc_without_limits() -> None:
    cfg = budget("")
    assert (cfg.currency, cfg.timezone, cfg.hard_action, cfg.on_backend_error) == (
        "USD",
        None,
        "reject",
        "fail_closed",
    )
    assert not cfg.has_limits
    assert cfg.daily_limit_micros is None
    assert cfg.effective_soft_action is None


def test_the_full_example_loads() -> None:
    cfg = budget(
        """
        timezone: Asia/Shanghai
        currency: CNY
        usd_rate: "7.1"
        daily_limit: 100
        monthly_limit: 2000
        request_limit: 2
        model_limits: {gpt-4o: {daily: 50}}
        user_limits: {daily: 5, monthly: 50}
        soft_limit: 0.8
        soft_action: downgrade
        hard_action: cache_only
        on_backend_error: fail_open
        default_max_output_tokens: 1024
        """
    )
    assert cfg.daily_limit_micros == 14_084_507  # 100 CNY / 7.1, rounded down
    assert cfg.request_limit_micros == 281_690
    assert cfg.effective_soft_action == "downgrade"
    assert cfg.soft_limit_micros(1_000_000) == 800_000
    assert cfg.from_micros(1_000_000) == Decimal("7.1")


def test_a_soft_limit_without_an_action_warns() -> None:
    assert budget("daily_limit: 1\nsoft_limit: 0.9").effective_soft_action == "warn"


def test_usd_amounts_convert_exactly_to_micros() -> None:
    assert budget("daily_limit: 12.345678").daily_limit_micros == 12_345_678


def test_an_unknown_time_zone_suggests_the_iana_name() -> None:
    message = error_of("timezone: Asia/Shangai")
    assert "unknown time zone 'Asia/Shangai'" in message
    assert "'Asia/Shanghai'" in message


def test_a_foreign_currency_without_a_rate_says_what_to_add() -> None:
    assert "currency CNY needs `usd_rate`" in error_of("currency: CNY\ndaily_limit: 100")


def test_a_rate_on_usd_is_refused() -> None:
    assert "set `currency`" in error_of("usd_rate: 7.1")


def test_a_lower_case_currency_is_refused() -> None:
    assert "currency" in error_of("currency: cny\nusd_rate: 7")


def test_a_zero_or_negative_limit_is_refused_with_the_fix() -> None:
    assert "remove the key for no limit" in error_of("daily_limit: 0")
    assert "remove the key for no limit" in error_of("monthly_limit: -5")


def test_a_daily_limit_above_the_monthly_one_is_refused() -> None:
    assert "above `monthly_limit`" in error_of("daily_limit: 10\nmonthly_limit: 5")


def test_a_soft_action_needs_a_soft_limit() -> None:
    assert "needs `soft_limit`" in error_of("daily_limit: 1\nsoft_action: downgrade")


def test_a_soft_limit_needs_a_hard_limit() -> None:
    assert "none is set" in error_of("soft_limit: 0.8")


def test_a_soft_limit_is_a_share_up_to_one() -> None:
    assert "soft_limit" in error_of("daily_limit: 1\nsoft_limit: 80")


def test_an_unknown_action_names_the_value_and_the_key() -> None:
    message = error_of("daily_limit: 1\nsoft_limit: 0.5\nsoft_action: block")
    assert "'block'" in message and "$.soft_action" in message


def test_a_typo_in_a_key_is_an_error() -> None:
    assert "daily_limt" in error_of("daily_limt: 5")


def test_a_model_limit_needs_an_amount() -> None:
    assert "give `daily`, `monthly` or both" in error_of("model_limits: {gpt-4o: {}}")


def test_rate_limits_load_and_an_empty_block_is_refused() -> None:
    data = yaml.safe_load("per_key: {requests_per_minute: 60}\nper_tenant: {tokens_per_minute: 9}")
    cfg = msgspec.convert(data, RateLimitsConfig, strict=False)
    assert cfg.per_key is not None and cfg.per_key.requests_per_minute == 60
    assert cfg.on_backend_error == "fail_open"
    with pytest.raises(msgspec.ValidationError, match="requests_per_minute"):
        msgspec.convert({"per_key": {}}, RateLimitsConfig)


# -- scopes ------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 16, 30, tzinfo=UTC)  # 2026-11-26 00:30 in Shanghai


def test_a_request_charges_the_tenants_day_and_month_in_its_time_zone() -> None:
    cfg = budget("daily_limit: 10")
    scopes = budget_scopes(
        "acme", cfg, model="gpt-4o", user=None, now=NOW, tenant_timezone="Asia/Shanghai"
    )
    assert [(s.key, s.limit_micros) for s in scopes] == [
        ("t/acme/day/2026-11-26", 10_000_000),
        ("t/acme/month/2026-11", None),
    ]
    assert scopes[0].resets_at == datetime(2026, 11, 26, 16, tzinfo=UTC)


def test_a_budget_time_zone_overrides_the_tenants() -> None:
    cfg = budget("timezone: Asia/Shanghai\ndaily_limit: 10")
    scope = budget_scopes("acme", cfg, model=None, user=None, now=NOW, tenant_timezone="UTC")[0]
    assert scope.key == "t/acme/day/2026-11-26"


def test_model_and_user_limits_add_their_own_scopes_with_names_escaped() -> None:
    cfg = budget(
        "monthly_limit: 100\nmodel_limits: {'openai/gpt-4o': {daily: 5}}\nuser_limits: {monthly: 1}"
    )
    keys = [s.key for s in budget_scopes("acme", cfg, model="openai/gpt-4o", user="a/b:c", now=NOW)]
    assert keys == [
        "t/acme/day/2026-11-25",
        "t/acme/month/2026-11",
        "t/acme/model/openai%2Fgpt-4o/day/2026-11-25",
        "t/acme/user/a%2Fb%3Ac/month/2026-11",
    ]
    other = budget_scopes("acme", cfg, model="small-model", user=None, now=NOW)
    assert len(other) == 2


def test_a_very_long_user_id_is_hashed_into_a_bounded_key() -> None:
    cfg = budget("user_limits: {daily: 1}")
    key = budget_scopes("t", cfg, model=None, user="x" * 5000, now=NOW)[-1].key
    assert len(key) < 120 and "sha256-" in key


def test_rate_counter_keys_separate_tenants_keys_and_units() -> None:
    assert rate_counter_key("acme", "requests") == "rl/acme/requests"
    assert rate_counter_key("acme", "tokens", "k1") == "rl/acme/key/k1/tokens"


def test_retry_after_counts_to_the_blocking_periods_reset() -> None:
    scope = Scope("k", 1, datetime(2026, 11, 26, 16, tzinfo=UTC))
    assert retry_after_s(ScopeState(scope, 1), NOW) == 23 * 3600 + 30 * 60
    assert retry_after_s(ScopeState(Scope("k", 1), 1), NOW) is None
