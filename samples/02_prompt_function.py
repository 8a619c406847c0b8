"""02 - Prompt functions.

A prompt function is a Jinja template plus execution settings. Rendering produces chat
messages (`<message role="...">` blocks); values are escaped, so user input can never
open a new message. The kernel sends the messages to the chat service and returns the
reply, with token usage. Streaming works the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kernel import Kernel, PromptFunction
from kernel.contents import TextDelta

TEMPLATE = """\
<message role="system">You write one short, friendly sentence.</message>
<message role="user">Describe {{ topic }} to a {{ audience }}.</message>"""


async def main(kernel: Kernel | None = None) -> Any:
    kernel = kernel or Kernel()
    describe = PromptFunction.from_template(
        TEMPLATE,
        name="describe",
        plugin="writing",
        inputs={"audience": "child"},  # a default value makes `audience` optional
        settings={"max_tokens": 60, "temperature": 0.3},
    )
    kernel.add_function(describe)

    messages = await kernel.render("writing.describe", topic="the moon")
    for message in messages:
        print(f"{message.role:>9}: {message.content}")

    result = await kernel.invoke("writing.describe", topic="the moon")
    print("reply:", result.value.strip())
    print("usage:", result.usage.input_tokens, "tokens in,", result.usage.output_tokens, "out")

    print("streamed: ", end="")
    pieces = []
    async for event in kernel.invoke_stream("writing.describe", topic="the sea", audience="sailor"):
        if isinstance(event, TextDelta):
            pieces.append(event.text)
            print(event.text, end="", flush=True)
    print()
    return {"reply": result.value, "streamed": "".join(pieces)}


if __name__ == "__main__":
    asyncio.run(main())
