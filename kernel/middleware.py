"""Middleware ("filters"): async `(context, next)` callables around function invocation,
prompt rendering and each automatic tool call.

A filter may change `context.arguments` before calling `await next(context)`, inspect or
replace `context.result` after it, or not call `next` at all and set `context.result`
itself (short-circuit). In the tool-call stage, setting `context.terminate = True` ends
the automatic function-calling loop after the current round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .contents import ChatMessage, ToolCall, ToolResult
    from .functions import FunctionResult, KernelFunction
    from .kernel import Kernel

Stage = Literal["function", "prompt", "tool_call"]
STAGES: tuple[Stage, ...] = ("function", "prompt", "tool_call")


@dataclass(slots=True)
class FunctionContext:
    kernel: Kernel
    function: KernelFunction
    arguments: dict[str, Any]
    result: FunctionResult | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PromptContext:
    kernel: Kernel
    function: KernelFunction
    arguments: dict[str, Any]
    rendered: str | None = None
    messages: list[ChatMessage] | None = None


@dataclass(slots=True)
class ToolCallContext:
    kernel: Kernel
    function: KernelFunction
    call: ToolCall
    arguments: dict[str, Any]
    round: int = 0
    result: ToolResult | None = None
    terminate: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


Next = Callable[[Any], Awaitable[None]]
Filter = Callable[[Any, Next], Awaitable[None]]


async def run_pipeline(filters: Sequence[Filter], context: Any, final: Next) -> None:
    """Run `filters` in order around `final`; each decides whether to call the next."""
    if not filters:
        await final(context)
        return

    async def step(index: int, ctx: Any) -> None:
        if index == len(filters):
            await final(ctx)
        else:
            await filters[index](ctx, lambda c: step(index + 1, c))

    await step(0, context)
