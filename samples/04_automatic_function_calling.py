"""04 - Automatic function calling.

`kernel.chat` offers kernel functions to the model as tools, runs the calls it asks for
(arguments validated, errors sent back as short tool results), and asks again until the
model answers. The loop is the kernel's, the same for every provider.

Capable models choose tools themselves (`tool_choice="auto"`, the default). The small
default local model does not, so this sample names the tool, which forces the first call
only; later rounds are `auto`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kernel import Kernel

QUESTION = "What is 2480 * 12.5 / 100? Use the calculator."


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    result = await kernel.chat(
        QUESTION,
        tools=["math.evaluate", "time.today"],  # offer only these (default: every function)
        tool_choice="math.evaluate",
        settings={"max_tokens": 64},
    )
    for record in result.trace:
        print(f"round {record.round}: {record.function}({record.call.arguments}) -> {record.result.content}")
    print("answer:", result.text.strip())
    return {"calls": [(r.function, r.result.content) for r in result.trace], "answer": result.text}


if __name__ == "__main__":
    asyncio.run(main())
