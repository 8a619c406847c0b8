"""The usage meter of running invocations: every model call adds its tokens and cost to
the innermost running invocation, and a finished nested invocation adds its own to its
parent's, so `FunctionResult.usage` covers every model call made on a function's behalf."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from .contents import Usage

if TYPE_CHECKING:
    from .functions import FunctionResult
    from .settings import Price

METER: ContextVar[tuple[int, FunctionResult] | None] = ContextVar("kernel_usage_meter", default=None)
"""(nesting depth, result) of the innermost running invocation. The result under
construction is the meter. Its `cost` starts at 0.0 and becomes None (unpriced) for good
as soon as one call is unpriced: an unknown cost is never zero."""


def add_cost(result: FunctionResult, cost: float | None) -> None:
    if result.cost is not None:
        result.cost = None if cost is None else result.cost + cost


def record(usage: Usage, model: str, prices: dict[str, Price]) -> None:
    """Add one model call's usage (and its cost, when priced) to the running invocation."""
    current = METER.get()
    if current is None:
        return
    meter = current[1]
    usage = Usage(usage.input_tokens, usage.output_tokens, usage.cached_tokens,
                  usage.cache_write_tokens, max(usage.requests, 1))
    meter.usage.add(usage)
    cost = None
    if prices:
        from .services.pricing import cost as price

        cost = price(usage, model, prices)
    add_cost(meter, cost)


def close(meter: FunctionResult, parent: tuple[int, FunctionResult] | None) -> None:
    """A finished invocation's usage and cost, added to its parent's."""
    if parent is not None:
        outer = parent[1]
        if meter.usage.requests:
            outer.usage.add(meter.usage)
        add_cost(outer, meter.cost)
