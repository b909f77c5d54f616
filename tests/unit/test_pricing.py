"""Prices from litellm's bundled table, overrides, and exact cost arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.money import Micros
from gateway.pricing import FREE, ModelPrice, PriceTable, UnknownModelPrice, litellm_price_file
from gateway.usage import Usage

_REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def litellm_table() -> PriceTable:
    return PriceTable.from_litellm()


def test_litellm_price_file_is_found_without_importing_litellm() -> None:
    path = litellm_price_file()
    assert path.is_file()
    assert path.name == "model_prices_and_context_window_backup.json"
    # In a fresh interpreter, since other tests may import litellm into this one.
    code = (
        "import sys\n"
        "from gateway.pricing import PriceTable\n"
        "assert PriceTable.from_litellm().knows('gpt-4o')\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=_REPO_ROOT)


def test_litellm_table_holds_thousands_of_token_priced_models(litellm_table: PriceTable) -> None:
    assert len(litellm_table) > 1000
    assert litellm_table.knows("gpt-4o")
    # The schema example at the top of the file is not a model.
    assert not litellm_table.knows("sample_spec")


def test_gpt_4o_mini_price_is_exact_decimal(litellm_table: PriceTable) -> None:
    price = litellm_table.price("gpt-4o-mini")
    assert price.input_per_token == Decimal("1.5E-7")
    assert str(price.input_per_token) == "1.5E-7"  # the JSON literal, not a float's binary error
    assert price.output_per_token == Decimal("6E-7")
    assert price.cached_input_per_token == Decimal("7.5E-8")


def test_cost_of_a_known_usage_is_exact(litellm_table: PriceTable) -> None:
    cost = litellm_table.cost_usd("gpt-4o-mini", Usage(prompt_tokens=1000, completion_tokens=200))
    # 1000 * 0.15/1M + 200 * 0.60/1M
    assert cost == Decimal("0.00027")
    assert litellm_table.cost_micros("gpt-4o-mini", Usage(1000, 200)) == 270


def test_cached_prompt_tokens_are_priced_at_the_cached_rate(litellm_table: PriceTable) -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_prompt_tokens=300)
    # 700 * 1.5e-7 + 300 * 7.5e-8 + 200 * 6e-7
    assert litellm_table.cost_usd("gpt-4o-mini", usage) == Decimal("0.0002475")


def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_known() -> None:
    table = PriceTable({"m": ModelPrice.per_million(2, 8)})
    usage = Usage(prompt_tokens=1000, completion_tokens=0, cached_prompt_tokens=400)
    assert table.cost_usd("m", usage) == Decimal("0.002")


def test_more_cached_than_prompt_tokens_never_makes_a_negative_charge() -> None:
    table = PriceTable({"m": ModelPrice.per_million(2, 8, cached_input_usd=1)})
    usage = Usage(prompt_tokens=100, completion_tokens=0, cached_prompt_tokens=500)
    assert table.cost_usd("m", usage) == Decimal(
        "0.0001"
    )  # all 100 prompt tokens at the cached rate


def test_override_wins_over_litellm() -> None:
    override = ModelPrice.per_million("1", "2")
    table = PriceTable.from_litellm({"gpt-4o-mini": override, "my-local-model": FREE})
    assert table.price("gpt-4o-mini") == override
    assert table.price("my-local-model") == FREE
    assert table.cost_micros("my-local-model", Usage(10_000, 10_000)) == 0
    # The cached litellm table itself is not modified by one table's overrides.
    assert PriceTable.from_litellm().price("gpt-4o-mini").input_per_token == Decimal("1.5E-7")


def test_with_overrides_returns_a_new_table_and_leaves_the_old_one_alone() -> None:
    base = PriceTable({"a": ModelPrice.per_million(1, 1)})
    derived = base.with_overrides({"a": FREE, "b": ModelPrice.per_million(3, 4)})
    assert derived.price("a") == FREE
    assert derived.knows("b")
    assert base.price("a") == ModelPrice.per_million(1, 1)
    assert not base.knows("b")


def test_provider_prefix_is_stripped_when_the_full_name_is_unknown(
    litellm_table: PriceTable,
) -> None:
    assert litellm_table.price("openai/gpt-4o-mini") == litellm_table.price("gpt-4o-mini")
    assert litellm_table.knows("some-proxy/openai/gpt-4o-mini")
    # Asking twice goes through the memo and gives the same answer.
    assert litellm_table.price("openai/gpt-4o-mini") == litellm_table.price("gpt-4o-mini")


def test_an_exact_prefixed_entry_wins_over_the_stripped_name() -> None:
    table = PriceTable(
        {"gpt-4o": ModelPrice.per_million(1, 1), "azure/gpt-4o": ModelPrice.per_million(5, 5)}
    )
    assert table.price("azure/gpt-4o") == ModelPrice.per_million(5, 5)
    assert table.price("openai/gpt-4o") == ModelPrice.per_million(1, 1)


def test_unknown_model_error_suggests_close_names(litellm_table: PriceTable) -> None:
    with pytest.raises(UnknownModelPrice) as caught:
        litellm_table.price("gpt-4o-mimi")
    error = caught.value
    assert error.model == "gpt-4o-mimi"
    assert error.suggestions[0] == "gpt-4o-mini"
    assert len(error.suggestions) <= 3
    message = str(error)
    assert "no price for model 'gpt-4o-mimi' in litellm's price table" in message
    assert "did you mean 'gpt-4o-mini'" in message
    assert "input_usd_per_mtok" in message and "output_usd_per_mtok" in message


def test_unknown_prefixed_model_suggests_by_its_bare_name(litellm_table: PriceTable) -> None:
    with pytest.raises(UnknownModelPrice) as caught:
        litellm_table.price("openai/gpt-4o-mimi")
    assert caught.value.suggestions[0] == "gpt-4o-mini"


def test_unknown_model_without_close_names_says_how_to_fix_it() -> None:
    table = PriceTable({"gpt-4o": ModelPrice.per_million(1, 1)})
    with pytest.raises(UnknownModelPrice) as caught:
        table.price("zzzzzzzz")
    assert caught.value.suggestions == []
    assert "did you mean" not in str(caught.value)
    assert "to the tier in the config" in str(caught.value)
    assert not table.knows("zzzzzzzz")


def test_unknown_model_price_is_not_a_gateway_error() -> None:
    from gateway.errors import GatewayError

    assert not issubclass(UnknownModelPrice, GatewayError)


def test_per_million_converts_usd_per_million_tokens_to_per_token() -> None:
    price = ModelPrice.per_million("0.15", Decimal("0.6"), cached_input_usd=0.075)
    assert price.input_per_token == Decimal("1.5E-7")
    assert price.output_per_token == Decimal("6E-7")
    assert price.cached_input_per_token == Decimal("7.5E-8")  # float read via its repr: exact
    assert ModelPrice.per_million(3, 15).cached_input_per_token is None
    assert ModelPrice.per_million(3, 15).output_per_token == Decimal("0.000015")


def test_free_price_is_zero_and_shared() -> None:
    assert ModelPrice.FREE is FREE
    assert FREE.input_per_token == 0 and FREE.output_per_token == 0


def test_negative_or_boolean_prices_are_rejected() -> None:
    with pytest.raises(ValueError, match="input_per_token"):
        ModelPrice(Decimal("-1"), Decimal(0))
    with pytest.raises(ValueError, match="output_per_token"):
        ModelPrice(Decimal(0), Decimal("NaN"))
    with pytest.raises(TypeError):
        ModelPrice.per_million(True, 1)


@pytest.mark.parametrize(
    ("prompt_tokens", "expected_micros"),
    [(1, 0), (3, 2), (5, 2), (7, 4), (2, 1)],  # 0.5, 1.5, 2.5, 3.5, 1.0 micros
)
def test_cost_micros_rounds_half_to_even(prompt_tokens: int, expected_micros: int) -> None:
    # Half a micro-dollar per prompt token makes every odd count land exactly on .5.
    table = PriceTable({"half": ModelPrice.per_million("0.5", 0)})
    micros = table.cost_micros("half", Usage(prompt_tokens=prompt_tokens))
    assert micros == Micros(expected_micros)
    assert type(micros) is int


def test_from_litellm_reads_a_given_file_and_skips_entries_without_token_prices(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prices.json"
    # Written as raw JSON text so the literals are exactly what litellm's file would hold.
    path.write_text(
        """{
          "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
          "chat-model": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
                         "cache_read_input_token_cost": 7.5e-08},
          "free-model": {"input_cost_per_token": 0, "output_cost_per_token": 0},
          "embedding": {"input_cost_per_token": 1e-07},
          "image": {"output_cost_per_image": 0.04},
          "weird": {"input_cost_per_token": "1", "output_cost_per_token": true}
        }"""
    )
    json.loads(path.read_text())  # the fixture itself is valid JSON
    table = PriceTable.from_litellm(path=path)
    assert len(table) == 2
    assert table.price("chat-model") == ModelPrice(
        Decimal("1.5E-7"), Decimal("6E-7"), Decimal("7.5E-8")
    )
    assert table.price("free-model") == FREE
    for skipped in ("sample_spec", "embedding", "image", "weird"):
        assert not table.knows(skipped)
