"""kernel-echo: a third-party plugin for orchestration-kernel.

It offers a chat provider `echo` (answers with the last user message, handy for wiring
tests and demos), a plugin `shout` with one native function and a command `kernel
echo-hello NAME`. All go through the hooks of `kernel.hookspecs`, exactly like the
built-in connectors, plugins and commands.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from kernel.contents import ChatMessage, ChatRequest, ChatResponse, StreamEnd, StreamEvent, TextDelta, Usage, UsageEvent
from kernel.functions import kernel_function
from kernel.hookspecs import RegisterCommand, hookimpl

if TYPE_CHECKING:
    from kernel import Kernel


class EchoChatModel:
    """A chat model that repeats the last user message, prefixed."""

    provider = "echo"

    def __init__(self, model: str, prefix: str) -> None:
        self.model, self.prefix = model, prefix

    async def complete(self, request: ChatRequest) -> ChatResponse:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        usage = Usage(input_tokens=sum(len(m.content.split()) for m in request.messages),
                      output_tokens=len(last.split()) + 1, requests=1)
        return ChatResponse(ChatMessage("assistant", f"{self.prefix}{last}"), "stop", usage, self.model)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        response = await self.complete(request)
        yield TextDelta(response.message.content)
        yield UsageEvent(response.usage)
        yield StreamEnd("stop", self.model)


def _echo_factory(name: str, service: Any, settings: Any) -> EchoChatModel:
    """Build the service from its configuration: `options.prefix` is this connector's option."""
    return EchoChatModel(service.model or "echo-1", str(service.options.get("prefix", "echo: ")))


@kernel_function
def exclaim(text: str, times: int = 1) -> str:
    """Add exclamation marks to a text."""
    return text.rstrip(".!") + "!" * max(1, times)


@hookimpl
def register_connectors(register: Any) -> None:
    register("chat", "echo", _echo_factory)


@hookimpl
def register_plugins(register: Any) -> None:
    register([exclaim], name="shout")


def _hello_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="who to greet")
    parser.add_argument("--times", type=int, default=1, help="how loudly (exclamation marks)")


async def _hello(args: argparse.Namespace, kernel: Kernel) -> int:
    """`kernel echo-hello NAME`: greets through this package's own `shout.exclaim`."""
    result = await kernel.invoke("shout.exclaim", text=f"Hello, {args.name}", times=args.times)
    print(result.value)
    return 0


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("echo-hello", _hello, help="greet someone, loudly (from the kernel-echo plugin)",
             arguments=_hello_arguments)
