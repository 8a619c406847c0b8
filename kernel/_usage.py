"""The context of running invocations.

* **Usage meter.** Every model call adds its tokens and cost to the innermost running
  invocation, and a finished nested invocation adds its own to its parent's, so
  `FunctionResult.usage` covers every model call made on a function's behalf.
* **Budget.** One top-level invocation (`Kernel.invoke`, `Kernel.chat`, `invoke_stream`,
  a plan step) may make `max_model_calls` model calls and `max_function_calls` function
  calls, shared by everything nested under it; depth alone does not bound a fan-out.
* **Approval scope.** Calls made for a model (a tool call the model asked for, a plan
  step) run inside an approval scope: a function marked `needs_approval` reached from
  there, however deeply nested, asks the scope's callback, and is refused without one.
  Outside a scope the application itself is calling, and is trusted.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .contents import Usage
from .errors import ApprovalDeniedError, BudgetExceededError
from .logging import LazyLogger

if TYPE_CHECKING:
    from .contents import ToolCall
    from .events import Event
    from .functions import FunctionResult, KernelFunction
    from .settings import Price

log = LazyLogger("kernel")

T = TypeVar("T")


Budget = list[int]
"""[function calls made, model calls made, max_function_calls, max_model_calls] of one
top-level invocation: one list, shared (by reference) by every invocation nested under
it; concurrent top-level invocations each have their own. A plain list because one is
made per top-level invoke: a list display costs a quarter of a class instance."""

FUNCTIONS, MODELS, MAX_FUNCTIONS, MAX_MODELS = range(4)  # the hot path spells them 0 and 2


def exceeded(budget: Budget, kind: Literal["model", "function"], what: str) -> BudgetExceededError:
    size, setting = (budget[MAX_MODELS], "max_model_calls") if kind == "model" else (
        budget[MAX_FUNCTIONS], "max_function_calls")
    return BudgetExceededError(
        f"{what}: not run: one top-level invocation may make {size} {kind} calls ({setting}) and this "
        f"one has used them all (nested functions and tool loops included); raise {setting} "
        "if this is intended"
    )


Scope = tuple[int, "FunctionResult", Budget]

METER: ContextVar[Scope | None] = ContextVar("kernel_usage_meter", default=None)
"""(nesting depth, result, budget) of the innermost running invocation. The result under
construction is the meter. Its `cost` starts at 0.0 and becomes None (unpriced) for good
as soon as one call is unpriced: an unknown cost is never zero. The budget is the
top-level invocation's."""


EVENT: ContextVar[Event | None] = ContextVar("kernel_event", default=None)
"""The event of the innermost running operation (`kernel.events`), when a sink is on: a
new event's parent, and the run it belongs to. Never set while no sink is on."""


def recorder(owner: Any = None) -> Any:
    """The emitter (`kernel.events`) to record an operation with: the running event's, else
    the one `owner` carries (a service registry carries its kernel's); None: no sink is on."""
    current = EVENT.get()
    if current is not None:
        return current.emitter
    return getattr(owner, "events", None)


def model_call(what: str) -> None:
    """Count one model call against the running invocation's budget, before it is made."""
    current = METER.get()
    if current is not None:
        budget = current[2]
        budget[MODELS] += 1
        if budget[MODELS] > budget[MAX_MODELS]:
            raise exceeded(budget, "model", what)


def add_cost(result: FunctionResult, cost: float | None) -> None:
    if result.cost is not None:
        result.cost = None if cost is None else result.cost + cost


def price(usage: Usage, model: str, prices: dict[str, Price]) -> float | None:
    """The cost of one model call (None: unpriced)."""
    if not prices:
        return None
    from .services.pricing import cost

    return cost(usage, model, prices)


def record(usage: Usage, model: str, prices: dict[str, Price]) -> None:
    """Add one model call's usage (and its cost, when priced) to the running invocation."""
    current = METER.get()
    if current is None:
        return
    meter = current[1]
    usage = Usage(usage.input_tokens, usage.output_tokens, usage.cached_tokens,
                  usage.cache_write_tokens, max(usage.requests, 1))
    meter.usage.add(usage)
    add_cost(meter, price(usage, model, prices))


def close(meter: FunctionResult, parent: Scope | None) -> None:
    """A finished invocation's usage and cost, added to its parent's."""
    if parent is not None:
        outer = parent[1]
        if meter.usage.requests:
            outer.usage.add(meter.usage)
        add_cost(outer, meter.cost)


async def scoped(events: AsyncIterator[T], scope: Scope) -> AsyncIterator[T]:
    """Iterate `events` in a task of its own that runs with `scope` as the running
    invocation: the stream's nested calls and model calls see it, the consumer's context
    never does (a context variable set in an async generator would leak into it between
    events). Closing this generator cancels the task."""
    import asyncio
    import contextlib

    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def produce() -> None:
        METER.set(scope)  # the task's own copy of the context
        async for event in events:
            queue.put_nowait(event)

    task = asyncio.ensure_future(produce())
    task.add_done_callback(lambda _task: queue.put_nowait(done))
    try:
        while (event := await queue.get()) is not done:
            yield event
        task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- approval ------------------------------------------------------------------------------

Approver = Callable[["KernelFunction", dict[str, Any], "ToolCall"], Any]


class ApprovalScope:
    """Calls made for a model: who approves a gated function (`approve`, None: nobody),
    the model's request they serve (`call`: its tool call, or one describing a plan
    step), and the name of the function already approved for that request (`granted`):
    the first gated invocation in the scope, when it is that function, is not asked
    again. By name, not identity: the tool loop may run a copy of the function (a sync
    one, in a worker thread)."""

    __slots__ = ("approve", "call", "granted")

    def __init__(self, approve: Approver | None, call: ToolCall, granted: str | None = None) -> None:
        self.approve, self.call, self.granted = approve, call, granted


APPROVAL: ContextVar[ApprovalScope | None] = ContextVar("kernel_approval_scope", default=None)


async def ask(approve: Approver | None, fn: KernelFunction, arguments: Mapping[str, Any], call: ToolCall) -> bool:
    """The callback's verdict on one call (sync or async); only `True` approves. A
    missing callback, or one that raises, refuses."""
    if approve is None:
        return False
    try:
        answer = approve(fn, dict(arguments), call)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:
        log.warning("approval_failed", function=fn.fully_qualified_name, error=type(exc).__name__)
        return False
    return answer is True


async def check_approval(fn: KernelFunction, arguments: Mapping[str, Any]) -> None:
    """Inside an approval scope, a gated function runs only when the scope's callback
    approves it (it sees the validated arguments); raises ApprovalDeniedError naming it."""
    scope = APPROVAL.get()
    if scope is None:  # the application itself is calling
        return
    name = fn.fully_qualified_name
    if scope.granted is not None:  # the first invocation in the scope is the approved call itself
        granted, scope.granted = scope.granted, None
        if granted == name:
            return
    if scope.approve is None:
        raise ApprovalDeniedError(
            f"{name} needs approval and no approval callback is configured (approval= or kernel.approval); "
            "it was not run"
        )
    if not await ask(scope.approve, fn, fn.validate(arguments), scope.call):
        raise ApprovalDeniedError(f"{name} needs approval and the approval callback declined it; it was not run")
