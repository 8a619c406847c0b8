"""How a prompt function runs: render (through `prompt` filters) to chat messages, pick
the service and merge execution settings, call the model (or the tool loop when the
settings offer functions), and check structured output against its schema.

Everything here uses the kernel's public surface (`filters`, `services`, `settings`,
`complete`, `stream`); the kernel itself knows nothing about prompts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from ..contents import ChatMessage, ChatRequest, ChatResponse, FinalMessage, KernelStreamEvent, StreamAccumulator
from ..logging import LazyLogger
from ..middleware import PromptContext, run_pipeline
from .markup import parse_chat

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .function import PromptFunction

__all__ = ["TOOL_SETTING_KEYS", "complete", "pop_tool_options", "render_messages", "request_settings", "stream"]

log = LazyLogger("kernel.prompts")

TOOL_SETTING_KEYS = ("function_choice", "tools", "plugins", "functions", "tool_choice", "loop_policy")
"""Execution settings that drive the kernel's tool loop rather than the provider."""


async def render_messages(kernel: Kernel, fn: PromptFunction, arguments: Mapping[str, Any]) -> list[ChatMessage]:
    """Render `fn` to chat messages through the kernel's `prompt` filters."""
    filters = kernel.filters["prompt"]
    if not filters:
        messages = parse_chat(await fn.render(kernel, arguments))
        if kernel.settings.log.log_values:
            log.debug("prompt_rendered", function=fn.fully_qualified_name, messages=[m.to_dict() for m in messages])
        return messages
    context = PromptContext(kernel, fn, dict(arguments))

    async def final(ctx: PromptContext) -> None:
        if ctx.rendered is None:
            ctx.rendered = await fn.render(kernel, ctx.arguments)
        ctx.messages = parse_chat(ctx.rendered)

    await run_pipeline(filters, context, final)
    if context.messages is None:
        context.messages = parse_chat(context.rendered or "")
    return context.messages


def request_settings(
    kernel: Kernel, fn: PromptFunction, overrides: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """Which chat service serves `fn`, and the merged execution settings: the service's
    own, then the function's for that service (or its `default`), then `overrides`."""
    service = fn.service or kernel.services.default_name("chat")
    configured = kernel.settings.services.get(service)
    merged = dict(configured.settings) if configured else {}
    merged.update(fn.settings_for(service))
    if overrides:
        merged.update(overrides)
    return service, merged


def pop_tool_options(settings: dict[str, Any]) -> dict[str, Any]:
    """Move tool-calling options out of provider settings (they drive the kernel's loop)."""
    options = {key: settings.pop(key) for key in TOOL_SETTING_KEYS if key in settings}
    if "function_choice" in options:
        options["tool_choice"] = options.pop("function_choice")
    return options


async def complete(
    kernel: Kernel,
    fn: PromptFunction,
    messages: list[ChatMessage],
    overrides: Mapping[str, Any] | None = None,
) -> ChatResponse:
    """One model turn for `fn` (the whole tool loop when its settings offer functions)."""
    service, settings = request_settings(kernel, fn, overrides)
    tool_options = pop_tool_options(settings)
    if tool_options:
        from ..chat import run_chat

        result = await run_chat(kernel, messages, service=service, settings=settings,
                                output_schema=fn.output_schema, output_schema_name=fn.name, **tool_options)
        return result.response
    request = ChatRequest(messages, settings=settings, output_schema=fn.output_schema, output_schema_name=fn.name)
    return await kernel.complete(request, service)


async def stream(
    kernel: Kernel, fn: PromptFunction, arguments: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> AsyncIterator[KernelStreamEvent]:
    """Stream `fn`: text deltas (and tool-call events) then one FinalMessage."""
    messages = await render_messages(kernel, fn, arguments)
    service, settings = request_settings(kernel, fn, overrides)
    tool_options = pop_tool_options(settings)
    if tool_options:
        from ..chat import stream_chat

        async for event in stream_chat(kernel, messages, service=service, settings=settings,
                                       output_schema=fn.output_schema, output_schema_name=fn.name, **tool_options):
            yield event
        return
    request = ChatRequest(messages, settings=settings, output_schema=fn.output_schema, output_schema_name=fn.name)
    accumulator = StreamAccumulator()
    async for event in kernel.stream(request, service):
        accumulator.add(event)
        yield event
    response = accumulator.response()
    yield FinalMessage(response.message, response.usage)
