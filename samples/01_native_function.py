"""01 - Native functions.

A native function is a typed Python callable marked with `@kernel_function`. The kernel
builds its JSON schema from the type hints, validates arguments before the call, and can
offer it to a model as a tool. No model is needed to run this sample.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from kernel import ArgumentError, Kernel, kernel_function


class Shop:
    """Prices of a tiny grocery shop."""

    PRICES = {"apple": 0.5, "bread": 2.25, "milk": 1.1}

    @kernel_function
    def price(self, item: Annotated[str, "what to buy"], quantity: Annotated[int, "how many"] = 1) -> float:
        """The total price of some items."""
        if item not in self.PRICES:
            raise ArgumentError("shop.price", "item", f"unknown item {item!r}; we sell {', '.join(self.PRICES)}")
        return round(self.PRICES[item] * quantity, 2)


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    kernel.add_plugin(Shop(), name="shop")

    total = await kernel.invoke("shop.price", item="apple", quantity=3)
    print("3 apples cost", total.value)

    print("schema:", kernel.get_function("shop.price").parameters_schema)

    try:  # arguments are validated: the error names the function, the parameter and the problem
        await kernel.invoke("shop.price", item="apple", quantity="many")
    except ArgumentError as exc:
        print("refused:", exc)

    # The standard plugins are native functions too.
    exact = await kernel.invoke("math.evaluate", expression="3 * 0.5 + 2.25")
    print("apples and bread:", exact.value)
    return {"apples": total.value, "basket": exact.value}


if __name__ == "__main__":
    asyncio.run(main())
