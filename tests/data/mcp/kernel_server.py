"""The kernel served over MCP through the embedding API (`kernel.mcp.serve`), over stdio,
with a scripted chat model: what the kernel's MCP client consumes in the round-trip tests.

Exposed: `demo.shout` (native), `demo.greet` (a prompt function, also an MCP prompt: its
answer streams, so it reports progress), `demo.secret_op` (needs approval: left out)."""

import asyncio
import sys

from kernel import InputVariable, Kernel, KernelSettings, PromptFunction, kernel_function
from kernel.testing import ScriptedChatModel


@kernel_function
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@kernel_function(needs_approval=True)
def secret_op() -> str:
    """Something that needs approval."""
    return "done"


def answer(request):  # the model answers with what it was asked, reversed word by word
    return "ANSWER: " + " ".join(reversed(request.messages[-1].content.split()))


async def main() -> None:
    kernel = Kernel(KernelSettings(), load_entry_points=False)
    kernel.services.add_service("scripted", ScriptedChatModel(default=answer))
    kernel.add_function(shout, plugin="demo")
    kernel.add_function(secret_op, plugin="demo")
    kernel.add_function(PromptFunction.from_template(
        "Write a warm greeting for {{ name }} in {{ words }} words.", name="greet", plugin="demo",
        description="A greeting.", inputs=[InputVariable("name", "who to greet"),
                                           InputVariable("words", default=5, type="integer")]))
    from kernel import mcp

    functions, held = mcp.select_functions(kernel, ["demo"])
    print(f"held: {held}", file=sys.stderr)
    await mcp.serve(kernel, functions, name="kernel-demo")


if __name__ == "__main__":
    asyncio.run(main())
