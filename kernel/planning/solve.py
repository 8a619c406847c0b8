"""`solve`: the open-ended strategy, for goals where a fixed plan is hard to write up
front: the goal goes to the automatic function-calling loop, which calls functions until
the model answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..contents import ChatMessage, Usage
from ..functions import KernelFunction
from .generation import describe_inputs

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["SOLVE_INSTRUCTIONS", "Solution", "solve"]


SOLVE_INSTRUCTIONS = """\
You solve the user's goal step by step. Think about which steps are needed, call the \
available functions to do them (use the result of one call in the next when needed), \
and when you have what you need, answer the goal directly and concisely."""


@dataclass(slots=True)
class Solution:
    """The answer of `solve`, the trace of function calls made, the conversation."""

    answer: str
    trace: list[Any]
    messages: list[ChatMessage]
    usage: Usage = field(default_factory=Usage)


async def solve(
    kernel: Kernel,
    goal: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    plugins: Iterable[str] | None = None,
    functions: Iterable[str | KernelFunction] | None = None,
    service: str | None = None,
    instructions: str = SOLVE_INSTRUCTIONS,
    **options: Any,
) -> Solution:
    """Reach `goal` through the automatic function-calling loop (for open-ended goals
    where a fixed plan is hard to write up front). `options` go to `kernel.chat`."""
    content = f"Goal: {goal}"
    if inputs:
        content += "\n" + describe_inputs(inputs).replace(' (refer to them with {"$input": NAME})', "")
    messages = [ChatMessage.system(instructions), ChatMessage.user(content)]
    if plugins is not None:
        options["plugins"] = list(plugins)
    if functions is not None:
        options["functions"] = [f.fully_qualified_name if isinstance(f, KernelFunction) else f for f in functions]
    if service is not None:
        options["service"] = service
    result = await kernel.chat(messages, **options)
    response = result.response
    usage = getattr(result, "usage", None) or response.usage
    return Solution(response.text, list(getattr(result, "trace", [])), list(result.messages), usage)
