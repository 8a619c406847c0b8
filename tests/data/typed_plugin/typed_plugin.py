"""A third-party plugin typed against the plugin contract (`kernel.hookspecs`): all five
hooks, a connector factory building a `ChatModel`, a function filter and a command.
tests/test_plugin_contract.py checks it with `mypy --strict` and registers it for real."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable

from kernel import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResponse,
    FunctionContext,
    Kernel,
    KernelSettings,
    ServiceSettings,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
    kernel_function,
)
from kernel.hookspecs import (
    ConnectorFactory,
    FunctionFilter,
    RegisterCommand,
    RegisterConnector,
    RegisterFilter,
    RegisterPlugin,
    hookimpl,
)


class TypedChat:
    """Answers with the last message, upper-cased."""

    provider = "typed"

    def __init__(self, model: str) -> None:
        self.model = model

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text = request.messages[-1].content.upper()
        return ChatResponse(ChatMessage("assistant", text), "stop", Usage(1, 1, requests=1), self.model)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        response = await self.complete(request)
        yield TextDelta(response.message.content)
        yield StreamEnd("stop", self.model)


def make_typed_chat(service_name: str, service: ServiceSettings, settings: KernelSettings) -> TypedChat:
    return TypedChat(service.model or "typed-1")


FACTORY: ConnectorFactory = make_typed_chat
MODEL: ChatModel = TypedChat("typed-1")


@kernel_function
def double(text: str) -> str:
    """Repeat a text twice."""
    return text + text


calls: list[str] = []


async def audit(context: FunctionContext, next: Callable[[FunctionContext], Awaitable[None]]) -> None:
    calls.append(context.function.fully_qualified_name)
    await next(context)


AUDIT: FunctionFilter = audit
configured: list[Kernel] = []


def hello_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")


async def say_hello(args: argparse.Namespace, kernel: Kernel) -> int:
    print(f"hello {args.name} from {len(kernel.plugins)} plugins")
    return 0


@hookimpl
def register_connectors(register: RegisterConnector) -> None:
    register("chat", "typed", make_typed_chat)


@hookimpl
def register_plugins(register: RegisterPlugin) -> None:
    register([double], name="typed")


@hookimpl
def register_filters(register: RegisterFilter) -> None:
    register("function", audit)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("typed-hello", say_hello, help="say hello", arguments=hello_arguments)


@hookimpl
def kernel_configured(kernel: Kernel) -> None:
    configured.append(kernel)
