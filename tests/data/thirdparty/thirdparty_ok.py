"""A well-behaved third-party plugin: one chat connector, one plugin, one filter."""

from __future__ import annotations

from typing import Any

from kernel import kernel_function
from kernel.contents import ChatMessage, ChatRequest, ChatResponse, StreamEnd, TextDelta, Usage
from kernel.hookspecs import hookimpl


class EchoChat:
    """Answers with the last user message, reversed."""

    provider = "thirdparty-echo"

    def __init__(self, model: str) -> None:
        self.model = model

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text = request.messages[-1].content[::-1]
        return ChatResponse(ChatMessage("assistant", text), "stop", Usage(1, 1, requests=1), self.model)

    async def stream(self, request: ChatRequest) -> Any:
        response = await self.complete(request)
        yield TextDelta(response.message.content)
        yield StreamEnd("stop", self.model)


def make_echo(service_name: str, service_settings: Any, kernel_settings: Any) -> EchoChat:
    return EchoChat(service_settings.model or "echo-1")


class Shout:
    @kernel_function
    def shout(self, text: str) -> str:
        """Upper-case a text."""
        return text.upper() + "!"


@hookimpl
def register_connectors(register: Any) -> None:
    register("chat", "thirdparty-echo", make_echo)


@hookimpl
def register_plugins(register: Any) -> None:
    register(Shout(), name="shout")


seen: list[str] = []


async def count_calls(context: Any, next: Any) -> None:
    seen.append(context.function.fully_qualified_name)
    await next(context)


@hookimpl
def register_filters(register: Any) -> None:
    register("function", count_calls)
