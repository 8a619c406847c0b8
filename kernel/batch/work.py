"""One record's work, the same in every executor: invoke the function (or run the plan)
with the record's arguments on a kernel, and turn what happened into an `Outcome`, plain
data that crosses process boundaries (no kernel, client or exception object in it)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import KernelError

if TYPE_CHECKING:
    from ..functions import KernelFunction
    from ..kernel import Kernel
    from ..planning import Plan

__all__ = ["Outcome", "Target", "jsonable", "resolve_target", "run_many", "target_for"]


@dataclass(slots=True)
class Outcome:
    """What one record gave: a value (JSON-able) or an error, the tokens and cost of the
    model calls made for it. `line`: its result line, taken from an earlier run's journal."""

    value: Any = None
    error: str | None = None
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    line: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What every record runs: a function by name, or a plan (its JSON form). `parameters`:
    the names a record's fields fill (the function's parameters, the plan's inputs);
    `required`: those without a default."""

    function: str | None
    plan: Mapping[str, Any] | None
    parameters: tuple[str, ...]
    required: tuple[str, ...] = ()

    @property
    def identity(self) -> Any:
        return self.function if self.plan is None else {"plan": self.plan}

    @property
    def label(self) -> str:
        if self.plan is None:
            return str(self.function)
        return f"plan {str(self.plan.get('goal', ''))[:40]!r}"


def target_for(kernel: Kernel, function: Any) -> tuple[Target, Any]:
    """The target of a batch and its resolved form on `kernel` (a KernelFunction or a Plan):
    `function` is a name, a KernelFunction, a Plan or a plan's JSON data."""
    from ..functions import KernelFunction
    from ..planning import InputRef, Plan

    if isinstance(function, str):
        function = kernel.get_function(function)
    if isinstance(function, KernelFunction):
        names = tuple(p.name for p in function.parameters)
        required = tuple(p.name for p in function.parameters if p.required)
        return Target(function.fully_qualified_name, None, names, required), function
    plan = function if isinstance(function, Plan) else Plan.from_dict(function)
    inputs = dict.fromkeys(plan.inputs)
    for step in plan.steps:
        for _, ref in step.references():
            if isinstance(ref, InputRef):
                inputs[ref.name] = None
    plan.validate(kernel, input_names=inputs.keys())
    required = tuple(name for name in inputs if name not in plan.inputs)
    return Target(None, plan.to_dict(), tuple(inputs), required), plan


def resolve_target(kernel: Kernel, target: Target) -> Any:
    """A target made runnable on a kernel built elsewhere (a worker's)."""
    if target.plan is None:
        return kernel.get_function(str(target.function))
    from ..planning import Plan

    return Plan.from_dict(target.plan)


def jsonable(value: Any) -> Any:
    """A result as JSON data: models and dataclasses as dicts, other objects as text."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        pass
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str))
    return json.loads(json.dumps(value, default=str)) if isinstance(value, list | dict | tuple) else str(value)


def _failure(exc: BaseException) -> Outcome:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return Outcome(error=message, error_type=type(exc).__name__)


async def run_one(kernel: Kernel, runnable: KernelFunction | Plan, arguments: dict[str, Any]) -> Outcome:
    from ..functions import KernelFunction

    try:
        if isinstance(runnable, KernelFunction):
            result = await kernel.invoke(runnable, arguments)
            usage = result.usage
            cost = result.cost if usage.input_tokens or usage.output_tokens else None
            return Outcome(jsonable(result.value), None, None, usage.input_tokens, usage.output_tokens, cost)
        from ..planning import execute_plan

        run = await execute_plan(kernel, runnable, arguments)
        return Outcome(jsonable(run.result), None, None, run.usage.input_tokens, run.usage.output_tokens)
    except asyncio.CancelledError:
        raise
    except (KernelError, Exception) as exc:
        return _failure(exc)


async def run_many(kernel: Kernel, runnable: KernelFunction | Plan, arguments: Sequence[dict[str, Any]],
                   concurrency: int = 1) -> list[Outcome]:
    """The outcomes of several records, in their order, at most `concurrency` at once."""
    if concurrency <= 1 or len(arguments) <= 1:
        return [await run_one(kernel, runnable, dict(args)) for args in arguments]
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(args: dict[str, Any]) -> Outcome:
        async with semaphore:
            return await run_one(kernel, runnable, dict(args))

    return list(await asyncio.gather(*(bounded(args) for args in arguments)))
