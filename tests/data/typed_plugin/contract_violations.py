"""A plugin that breaks the typed plugin contract: mypy --strict must reject each line
marked `violation[error code]` (tests/test_plugin_contract.py), and only those."""

from __future__ import annotations

import argparse

from typed_plugin import audit, make_typed_chat

from kernel import ChatRequest, ChatResponse, FunctionContext, KernelSettings, ServiceSettings
from kernel.hookspecs import RegisterCommand, RegisterConnector, RegisterFilter, RegisterPlugin, hookimpl


class HalfChat:
    """Has no `stream` and no `model`: not a ChatModel."""

    provider = "half"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        raise NotImplementedError


def one_argument_factory(service_name: str) -> HalfChat:
    return HalfChat()


def not_a_chat_model(service_name: str, service: ServiceSettings, settings: KernelSettings) -> HalfChat:
    return HalfChat()


def sync_filter(context: FunctionContext) -> None:
    """A filter without `next`, and not async."""


async def sync_handler(args: argparse.Namespace) -> int:
    return 0


@hookimpl
def register_connectors(register: RegisterConnector) -> None:
    register("chat", "half", one_argument_factory)  # violation[arg-type]: a factory takes three arguments
    register("chat", "half", not_a_chat_model)  # violation[arg-type]: HalfChat is not a ChatModel
    register("llm", "typed", make_typed_chat)  # violation[arg-type]: no such service kind


@hookimpl
def register_plugins(register: RegisterPlugin) -> None:
    register(object(), nmae="typo")  # violation[call-arg]: a misspelled keyword


@hookimpl
def register_filters(register: RegisterFilter) -> None:
    register("function", sync_filter)  # violation[call-overload]: a filter is async (context, next)
    register("middleware", audit)  # violation[call-overload]: no such stage


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    register("hi", sync_handler, help="hi")  # violation[arg-type]: a handler takes (args, kernel)
    register("hi", None)  # violation[call-arg]: help is required
