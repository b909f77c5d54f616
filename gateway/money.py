"""Money as integer micro-dollars (1 USD = 1,000,000 micros); never floats.

Prices are exact ``Decimal`` USD per token; a request's cost is computed exactly in ``Decimal``
and rounded half-even once, to whole micro-dollars, when it is recorded. The rounding error is at
most 0.5 µUSD per request and unbiased, far below a provider's billing granularity.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import NewType

Micros = NewType("Micros", int)

MICROS_PER_USD = 1_000_000
_MICRO = Decimal(MICROS_PER_USD)


def micros_from_usd(usd: Decimal) -> Micros:
    """Round an exact USD amount half-even to whole micro-dollars."""
    return Micros(int((usd * _MICRO).to_integral_value(rounding=ROUND_HALF_EVEN)))


def usd_from_micros(micros: int) -> Decimal:
    return Decimal(micros) / _MICRO


def format_usd(micros: int) -> str:
    """Render micros as a plain decimal USD string with six places, e.g. ``0.000123``."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{frac:06d}"
