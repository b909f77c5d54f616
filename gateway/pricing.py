"""Prices per model: litellm's bundled price table plus overrides from the routing config.

litellm ships its price map as a JSON file inside the installed package
(``model_prices_and_context_window_backup.json``, about 4,900 models, USD per token). We read that
file directly: importing litellm takes about 6 s and, without ``LITELLM_LOCAL_MODEL_COST_MAP``,
fetches the map from the internet. Prices stay exact ``Decimal`` from the JSON literal onwards, so
``1.5e-07`` is ``Decimal("1.5E-7")``, never the float ``1.4999999999999999e-07``.

An unknown model is a config-time error (:class:`UnknownModelPrice`), never a silent $0.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from gateway.money import Micros, micros_from_usd
from gateway.usage import Usage

__all__ = ["FREE", "ModelPrice", "PriceTable", "UnknownModelPrice", "litellm_price_file"]

_PRICE_FILE_NAME = "model_prices_and_context_window_backup.json"
_PER_MILLION = Decimal(1_000_000)
# The table's first entry documents its schema with placeholder numbers; it is not a model.
_NOT_MODELS = frozenset({"sample_spec"})
# Names resolved by prefix stripping are memoised; the names come from requests too, so the memo
# is bounded rather than allowed to grow with whatever clients send.
_MEMO_LIMIT = 4096

PriceInput = Decimal | str | int | float


def _to_decimal(value: PriceInput, what: str) -> Decimal:
    if isinstance(value, bool):  # bool is an int; True would silently mean $1
        raise TypeError(f"{what} must be a number, not {value!r}")
    if isinstance(value, float):
        # A YAML or JSON float: its shortest repr is the literal that was written (0.15 -> "0.15"),
        # whereas Decimal(0.15) would carry the binary error.
        return Decimal(repr(value))
    return Decimal(value)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per token for one model."""

    input_per_token: Decimal
    output_per_token: Decimal
    # Price of a prompt token the provider served from its prompt cache; None = same as input.
    cached_input_per_token: Decimal | None = None

    FREE: ClassVar[ModelPrice]

    def __post_init__(self) -> None:
        for name in ("input_per_token", "output_per_token", "cached_input_per_token"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"ModelPrice.{name} must be a finite Decimal >= 0, got {value!r}")

    @classmethod
    def per_million(
        cls,
        input_usd: PriceInput,
        output_usd: PriceInput,
        cached_input_usd: PriceInput | None = None,
    ) -> ModelPrice:
        """Build a price from USD per 1M tokens, the unit providers publish and configs use.

        Floats are read through their shortest repr, so ``0.15`` means exactly 0.15.
        """
        return cls(
            input_per_token=_to_decimal(input_usd, "input_usd") / _PER_MILLION,
            output_per_token=_to_decimal(output_usd, "output_usd") / _PER_MILLION,
            cached_input_per_token=(
                None
                if cached_input_usd is None
                else _to_decimal(cached_input_usd, "cached_input_usd") / _PER_MILLION
            ),
        )


ModelPrice.FREE = ModelPrice(Decimal(0), Decimal(0))
#: Zero price, for local models whose config sets no compute cost.
FREE = ModelPrice.FREE


class UnknownModelPrice(Exception):
    """No price is known for a model: raised while loading the config, not per request.

    Deliberately not a ``GatewayError``: a client never caused it, and serving the model at $0
    would corrupt every cost report.
    """

    def __init__(self, model: str, suggestions: list[str]) -> None:
        self.model = model
        self.suggestions = suggestions
        hint = ""
        if suggestions:
            hint = " did you mean " + ", ".join(repr(s) for s in suggestions) + "?"
        super().__init__(
            f"no price for model {model!r} in litellm's price table;{hint} add "
            "`price: {input_usd_per_mtok: ..., output_usd_per_mtok: ...}` to the tier in the config"
        )


def litellm_price_file() -> Path:
    """Where the installed litellm keeps its price table, found without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "litellm is not installed, so its price table cannot be read; install litellm or give "
            "every tier an explicit `price:` in the config"
        )
    return Path(spec.submodule_search_locations[0]) / _PRICE_FILE_NAME


def _price_of(entry: Any) -> ModelPrice | None:
    if not isinstance(entry, dict):
        return None
    input_cost = _as_price(entry.get("input_cost_per_token"))
    output_cost = _as_price(entry.get("output_cost_per_token"))
    # Entries without both token prices are images, embeddings, per-second audio...: pricing
    # them at $0 for the missing side would be wrong, so they are left out.
    if input_cost is None or output_cost is None:
        return None
    try:
        return ModelPrice(
            input_per_token=input_cost,
            output_per_token=output_cost,
            cached_input_per_token=_as_price(entry.get("cache_read_input_token_cost")),
        )
    except ValueError:  # a negative price in the table: skip it rather than fail startup
        return None


def _as_price(value: object) -> Decimal | None:
    # Numbers arrive as Decimal (float literals) or int; strings and booleans are not prices.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        return None
    return Decimal(value)


@functools.lru_cache(maxsize=4)
def _load_litellm_prices(path: Path) -> Mapping[str, ModelPrice]:
    # float_hook=Decimal hands us each number's JSON literal, so prices are exact as written.
    table = msgspec.json.Decoder(float_hook=Decimal).decode(path.read_bytes())
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a JSON object of model -> prices")
    prices: dict[str, ModelPrice] = {}
    for model, entry in table.items():
        if model in _NOT_MODELS:
            continue
        price = _price_of(entry)
        if price is not None:
            prices[model] = price
    return prices


@functools.lru_cache(maxsize=4)
def _load_litellm_windows(path: Path) -> Mapping[str, int]:
    """Model -> prompt tokens it accepts (``max_input_tokens``), where litellm knows it."""
    table = msgspec.json.decode(path.read_bytes())
    windows: dict[str, int] = {}
    if isinstance(table, dict):
        for model, entry in table.items():
            value = entry.get("max_input_tokens") if isinstance(entry, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                windows[model] = value
    return windows


def litellm_context_window(model: str, *, path: Path | None = None) -> int | None:
    """The context window litellm's table gives ``model`` (also without a provider prefix)."""
    try:
        windows = _load_litellm_windows(path or litellm_price_file())
    except FileNotFoundError:
        return None
    name = model
    while True:
        if name in windows:
            return windows[name]
        if "/" not in name:
            return None
        name = name.split("/", 1)[1]


class PriceTable:
    """Model name -> :class:`ModelPrice`, with exact cost computation.

    Immutable after construction; safe to share between threads and requests.
    """

    __slots__ = ("_prices", "_resolved")

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices: dict[str, ModelPrice] = dict(prices)
        self._resolved: dict[str, ModelPrice] = {}

    @classmethod
    def from_litellm(
        cls,
        overrides: Mapping[str, ModelPrice] | None = None,
        *,
        path: Path | None = None,
    ) -> PriceTable:
        """litellm's price table (read once per process and path), then ``overrides`` on top."""
        prices = dict(_load_litellm_prices(path or litellm_price_file()))
        if overrides:
            prices.update(overrides)
        return cls(prices)

    def with_overrides(self, overrides: Mapping[str, ModelPrice]) -> PriceTable:
        return PriceTable({**self._prices, **overrides})

    def __len__(self) -> int:
        return len(self._prices)

    def knows(self, model: str) -> bool:
        return self._lookup(model) is not None

    def price(self, model: str) -> ModelPrice:
        """The price of ``model``: by exact name, else without its provider prefix.

        ``openai/gpt-4o`` falls back to ``gpt-4o``. Raises :class:`UnknownModelPrice` with up to
        three close names otherwise.
        """
        price = self._lookup(model)
        if price is None:
            raise UnknownModelPrice(model, self._suggestions(model))
        return price

    def cost_usd(self, model: str, usage: Usage) -> Decimal:
        """Exact cost of one call; cached prompt tokens at the cached rate where there is one."""
        price = self.price(model)
        # Clamped: a provider reporting more cached tokens than prompt tokens must not produce a
        # negative charge for the uncached part.
        cached = min(max(usage.cached_prompt_tokens, 0), usage.prompt_tokens)
        cached_rate = price.cached_input_per_token
        if cached_rate is None:
            cached_rate = price.input_per_token
        return (
            (usage.prompt_tokens - cached) * price.input_per_token
            + cached * cached_rate
            + usage.completion_tokens * price.output_per_token
        )

    def cost_micros(self, model: str, usage: Usage) -> Micros:
        """:meth:`cost_usd` rounded half-even to whole micro-dollars, the unit the ledger stores."""
        return micros_from_usd(self.cost_usd(model, usage))

    def _lookup(self, model: str) -> ModelPrice | None:
        price = self._prices.get(model)
        if price is not None:
            return price
        price = self._resolved.get(model)
        if price is not None:
            return price
        # Strip leading path segments one at a time, so "openrouter/openai/gpt-4o" can still
        # match a table entry "openai/gpt-4o" before falling back to "gpt-4o".
        name = model
        while "/" in name:
            name = name.split("/", 1)[1]
            price = self._prices.get(name)
            if price is not None:
                if len(self._resolved) >= _MEMO_LIMIT:
                    self._resolved.clear()
                self._resolved[model] = price
                return price
        return None

    def _suggestions(self, model: str) -> list[str]:
        names = list(self._prices)
        found: list[str] = []
        bare = model.rsplit("/", 1)[-1]
        if bare != model:
            # The bare name first: "openai/gpt-4o-mimi" most likely meant "gpt-4o-mini", which
            # the prefixed spelling also resolves to, not some other provider's "x/openai/...".
            found += difflib.get_close_matches(bare, names, n=3)
        found += difflib.get_close_matches(model, names, n=3)
        return list(dict.fromkeys(found))[:3]
