"""03 - Functions calling each other, both ways.

* A template calls native functions: `{{ time.weekday(day) }}`, `{{ text.word_count(notes) }}`.
  Their results are inserted (escaped) before the prompt goes to the model.
* Native code calls a prompt function through the injected kernel: a parameter typed
  `Kernel` is filled in by the kernel and never shown to models.
Usage of nested model calls adds up in the outer result.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from kernel import Kernel, PromptFunction, kernel_function

REPORT = """\
<message role="system">You write one-line status reports.</message>
<message role="user">It is {{ time.weekday(day) }} {{ day }}. The notes have {{ text.word_count(notes) }} words.
Report on these notes: {{ notes }}</message>"""


@kernel_function
async def shout_report(
    day: Annotated[str, "YYYY-MM-DD"],
    notes: Annotated[str, "what happened"],
    kernel: Kernel,
) -> str:
    """Write a status report and return it in capitals."""
    report = await kernel.invoke("status.report", day=day, notes=notes)
    loud = await kernel.invoke("text.upper", text=str(report.value).strip())
    return str(loud.value)


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    kernel.add_function(PromptFunction.from_template(REPORT, name="report", plugin="status",
                                                     settings={"max_tokens": 60}))
    kernel.add_function(shout_report, plugin="status")

    notes = "Shipped the parser. Fixed two bugs."
    rendered = await kernel.render("status.report", day="2024-07-04", notes=notes)
    print("template called native code:\n ", rendered[-1].content.replace("\n", "\n  "))

    result = await kernel.invoke("status.shout_report", day="2024-07-04", notes=notes)
    print("native code called the prompt:", result.value)
    print("model calls made on its behalf:", result.usage.requests)
    return {"rendered": rendered[-1].content, "report": result.value}


if __name__ == "__main__":
    asyncio.run(main())
