"""The kernel's MCP server consumed by the kernel's MCP client: a kernel served through
the embedding API (`kernel.mcp.serve`, `tests/data/mcp/kernel_server.py`, over stdio) is a
plugin of another kernel. Its native function and its prompt function are tools there
(the prompt function runs on the serving kernel's model, its text arriving as progress
notifications as it streams); the prompt function is also an MCP prompt there, rendered
by the serving kernel and answered by the calling kernel's model."""

from __future__ import annotations

import asyncio
import sys

from kernel.testing import ScriptedChatModel, tool_call
from tests.mcp_support import KERNEL_SERVER, make_kernel

REMOTE = {"command": sys.executable, "args": [str(KERNEL_SERVER)]}


async def test_a_kernel_served_over_mcp_is_a_plugin_of_another_kernel() -> None:
    from kernel import mcp

    kernel = make_kernel(remote=REMOTE)
    model = ScriptedChatModel([tool_call("remote.demo_shout", text="quiet please"), "done",
                               lambda request: f"local model saw: {request.messages[-1].content}"])
    kernel.services.add_service("local", model)
    events: list[mcp.McpProgress] = []
    try:
        assert (await mcp.start(kernel)) == {"remote": None}
        functions = {fn.name: fn for fn in kernel.functions(["remote"])}
        assert set(functions) == {"demo_shout", "demo_greet", "demo_greet_prompt"}  # demo.secret_op: held back
        assert isinstance(functions["demo_greet_prompt"], mcp.McpPromptFunction)
        assert functions["demo_greet"].parameters_schema["properties"]["words"] == {"type": "integer", "default": 5}

        assert (await kernel.invoke("remote.demo_shout", text="hello")).value == "HELLO"  # {"result": ...} unwrapped
        answer = await kernel.chat("shout it", plugins=["remote"])
        assert answer.trace[0].result.content == "QUIET PLEASE"

        # The prompt function as a tool: it runs on the serving kernel's model, streaming progress.
        mcp.clients(kernel).plugins["remote"].connection.progress_listeners.append(events.append)
        greeting = await kernel.invoke("remote.demo_greet", name="Ada", words=3)
        await asyncio.sleep(0.05)
        assert greeting.value == "ANSWER: words. 3 in Ada for greeting warm a Write"
        assert events and "".join(e.message or "" for e in events) == greeting.value
        assert [e.progress for e in events] == sorted(e.progress for e in events)
        assert events[-1].progress == len(greeting.value)

        # The prompt function as an MCP prompt: rendered there, answered by this kernel's model.
        local = await kernel.invoke("remote.demo_greet_prompt", name="Bob", words="2")
        assert local.value == "local model saw: Write a warm greeting for Bob in 2 words."
        assert local.usage.requests == 1
    finally:
        await kernel.aclose()
