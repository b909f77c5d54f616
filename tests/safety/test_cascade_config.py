"""``tenants.NAME.safety.cascade`` in the config: defaults, and bad values refused at load with
the file, the $.path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError
from tests.cli.test_cli import REPO, run
from tests.support.gateway_server import TEST_CONFIG, gateway_env, load_test_config

ENV = gateway_env("http://127.0.0.1:9")


def with_cascade(block: str, config: str = TEST_CONFIG) -> str:
    return config.replace(
        "    store_request_text: true\n",
        f"    store_request_text: true\n    safety:\n      cascade: {block}\n",
    )


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_test_config(ENV, text)
    return str(caught.value)


def test_the_cascade_is_off_unless_enabled_and_buffers_streams_by_default() -> None:
    loaded = load_test_config(ENV, with_cascade("{ enabled: true }"))
    cascade = loaded.config.tenants["acme"].safety.cascade
    assert cascade.enabled and (cascade.small_tier, cascade.large_tier) == ("small", "large")
    assert (cascade.stream, cascade.stream_buffer_tokens, cascade.threshold) == ("buffer", 256, 0.5)
    assert not load_test_config(ENV).config.tenants["acme"].safety.cascade.enabled


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "{ enabled: true, threshold: 1.5 }",
            "$.tenants.acme.safety.cascade.threshold: Expected `float` <= 1.0",
        ),
        (
            "{ enabled: true, stream: sometimes }",
            "$.tenants.acme.safety.cascade.stream: Invalid enum value 'sometimes'; "
            "expected one of: off, buffer",
        ),
        (
            "{ enabled: true, stream_buffer_tokens: 0 }",
            "$.tenants.acme.safety.cascade.stream_buffer_tokens: Expected `int` >= 1",
        ),
        (
            "{ enabled: true, low_token_logprob: 0.5 }",
            "$.tenants.acme.safety.cascade.low_token_logprob: Expected `float` <= 0.0",
        ),
        (
            "{ enabled: true, treshold: 0.4 }",
            "$.tenants.acme.safety.cascade: Object contains unknown field `treshold`",
        ),
        (
            "{ enabled: true, small_tier: large }",
            "$.tenants.acme.safety.cascade: small_tier and large_tier are both 'large'",
        ),
    ],
)
def test_bad_values_are_refused_with_the_path(block: str, expected: str) -> None:
    message = error_of(with_cascade(block))
    assert message.startswith("tests/support/gateway_server.py: ")
    assert expected in message


def test_an_unconfigured_tier_is_refused_with_the_known_tiers() -> None:
    without_large = TEST_CONFIG.replace("  large:\n    upstream: mock\n    model: gpt-4o\n", "")
    without_large = without_large.replace("      route: large\n", "      route: small\n")
    without_large = without_large.replace("  gpt-4o: { route: large }\n", "")
    without_large = without_large.replace("models: [auto, gpt-4o]", "models: [auto]")

    message = error_of(with_cascade("{ enabled: true }", without_large))

    assert "$.tenants.acme.safety.cascade.large_tier: tier 'large' is not configured" in message
    assert "known tiers: small" in message and "enabled: false" in message
    # Off, the same block loads: an unused cascade needs no large tier.
    load_test_config(ENV, with_cascade("{ enabled: false }", without_large))


def test_config_check_lists_the_cascade_among_the_safeguards(tmp_path: Path) -> None:
    text = (REPO / "config" / "gateway.yaml").read_text("utf-8")
    cascade = "    timezone: UTC\n    safety:\n      cascade: { enabled: true }\n"
    path = tmp_path / "cascade.yaml"
    path.write_text(text.replace("    timezone: UTC\n", cascade, 1), "utf-8")

    result = run("config", "check", str(path))

    assert result.returncode == 0, result.stderr
    assert "  safety: default (cascade)" in result.stdout
