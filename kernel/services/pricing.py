"""What a call cost, from token usage and the configured prices.

Prices are per million tokens and keyed by model id (`[prices."gpt-4o"]` in kernel.toml).
A model with no price is *unpriced* (`None`), never free: reporting zero for a model we
know nothing about would make a cost budget silently pass.

Token convention (kept by every connector): `Usage.input_tokens` counts every input
token, including `cached_tokens` (read from the provider's prompt cache, billed at
`cached_input` when that price is set) and `cache_write_tokens` (written to the cache,
billed at the `input` price: `Price` has no separate cache-write rate).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..contents import Usage
from ..settings import Price

_PER_TOKEN = 1e-6


def find_price(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of `model`: an exact key, else the longest key that is a prefix of a dated
    or suffixed snapshot (`gpt-4o-2024-08-06` uses `gpt-4o`; `gpt-4o-mini-...` prefers
    `gpt-4o-mini`)."""
    if not model or not prices:
        return None
    price = prices.get(model)
    if price is not None:
        return price
    best: str | None = None
    for key in prices:
        if (
            model.startswith(key)
            and model[len(key) : len(key) + 1] in ("-", "@", ":")
            and (best is None or len(key) > len(best))
        ):
            best = key
    return prices[best] if best is not None else None


def cost(usage: Usage, model: str, prices: Mapping[str, Price]) -> float | None:
    """The cost in dollars of `usage` on `model`, or None when the model has no price."""
    price = find_price(model, prices)
    if price is None:
        return None
    cached = min(usage.cached_tokens, usage.input_tokens)
    fresh = usage.input_tokens - cached
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    total = fresh * price.input + cached * cached_rate + usage.output_tokens * price.output
    return total * _PER_TOKEN


def format_cost(value: float | None) -> str:
    """`"unpriced"` for None, else dollars with six decimals (`"$0.000123"`)."""
    if value is None:
        return "unpriced"
    return f"${value:.6f}"
