"""Plans run as a graph (`execute_plan`).

Execution starts every step whose dependencies are done, bounded by `max_concurrency`;
a failed step skips its dependants while independent branches finish. The `PlanRun`
state (outputs and status per step) can be passed back as `resume=` to re-run only what
did not finish; so can the id of a run in the journal (`kernel.events`), which makes a
plan durable: a run that crashed or was killed continues where it stopped. See
`kernel.planning.model` for the data model and the JSON form.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._usage import APPROVAL, ApprovalScope
from ..contents import ToolCall, Usage
from ..errors import ApprovalDeniedError, KernelError, PlanError, PlanExecutionError, PlanValidationError
from ..logging import LazyLogger
from .generation import parse_reply
from .model import InputRef, Plan, Ref, Step, StepRef

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["PlanRun", "StepStatus", "execute_plan", "extract"]

log = LazyLogger("kernel.planning")

StepStatus = Literal["pending", "done", "failed", "skipped"]
Approval = Callable[[Plan], bool | Awaitable[bool]]


@dataclass(slots=True)
class PlanRun:
    """The state of one execution: inputs, outputs and status per step, errors, usage.

    Pass it back as `execute_plan(..., resume=run)` to re-run only the steps that are not
    `done` (or, with a sink on, the run's id: `resume="RUN"`, read from the journal)."""

    plan: Plan
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    status: dict[str, StepStatus] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    invoked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(self.status.get(s.id) == "done" for s in self.plan.steps)

    @property
    def result(self) -> Any:
        """The plan's answer (the output reference resolved), None if not computed."""
        ref = self.plan.output_ref
        if ref is None or self.status.get(ref.step) != "done":
            return None
        return extract(self.outputs[ref.step], ref.segments)

    def steps_with(self, status: StepStatus) -> list[str]:
        return [s.id for s in self.plan.steps if self.status.get(s.id) == status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": dict(self.status),
            "outputs": {k: _jsonable(v) for k, v in self.outputs.items()},
            "errors": dict(self.errors),
            "result": _jsonable(self.result),
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return _structured(value) if not isinstance(value, str) else value


def _structured(value: Any) -> Any:
    """A step output as data: JSON text parsed, models and dataclasses as dicts."""
    if isinstance(value, str):
        try:
            return parse_reply(value)
        except PlanValidationError:
            return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def extract(value: Any, segments: Sequence[str]) -> Any:
    """Read a field path from a step output; LookupError says where it failed."""
    walked: list[str] = []
    for segment in segments:
        value = _structured(value)
        at = f" at {'.'.join(walked)!r}" if walked else ""
        if isinstance(value, Mapping):
            if segment not in value:
                raise LookupError(f"has no field {segment!r}{at} (fields: {', '.join(map(str, value)) or 'none'})")
            value = value[segment]
        elif isinstance(value, list):
            if not segment.isdigit() or int(segment) >= len(value):
                raise LookupError(f"has no item {segment!r}{at} (a list of {len(value)})")
            value = value[int(segment)]
        else:
            raise LookupError(f"is {type(value).__name__}{at}, which has no field {segment!r}")
        walked.append(segment)
    return value


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """Fit a step output to the parameter it feeds: structured values become JSON text
    for text parameters; JSON text becomes data for object/list parameters."""
    kind = schema.get("type")
    if kind == "string" and not isinstance(value, str):
        data = _structured(value)
        return json.dumps(data, ensure_ascii=False, default=str) if isinstance(data, dict | list) else str(data)
    if kind in ("object", "array") and isinstance(value, str):
        data = _structured(value)
        if isinstance(data, dict | list):
            return data
    return value


async def _approve(approval: Approval, plan: Plan) -> None:
    verdict = approval(plan)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if not verdict:
        raise ApprovalDeniedError(f"the plan for {plan.goal!r} was not approved; no step was run")


def _same_steps(a: Plan, b: Plan) -> bool:
    return [s.to_dict() for s in a.steps] == [s.to_dict() for s in b.steps]


async def execute_plan(
    kernel: Kernel,
    plan: Plan,
    inputs: Mapping[str, Any] | None = None,
    *,
    max_concurrency: int = 4,
    step_timeout: float | None = None,
    approval: Approval | None = None,
    resume: PlanRun | str | None = None,
    allowed: Iterable[str] | None = None,
    max_steps: int | None = None,
    retry_in_flight: bool = False,
) -> PlanRun:
    """Validate `plan`, ask `approval` (if given), then run its steps as a graph.

    Returns the PlanRun when every step is done. When a step fails, its dependants are
    skipped, independent steps still finish, and PlanExecutionError names the first
    failed step and why, with the outputs so far; its `.run` is the PlanRun to resume.

    `resume`: a PlanRun (its `done` steps are not run again), or the id of a journaled
    plan run (a unique prefix, or `last`), which crashed, was killed or failed: its
    state is read from the journal (`kernel.events`) and no step it completed runs again.
    A step that was running when it stopped runs again only when its function is
    idempotent; otherwise PlanError names the step, unless `retry_in_flight=True`. With a
    sink on, the run is journaled: each step's arguments when it starts (on disk before
    it runs) and its output when it ends (on disk before a dependant starts).
    """
    if max_concurrency < 1:
        raise PlanError(f"max_concurrency must be at least 1, not {max_concurrency}")
    resumes = None
    if isinstance(resume, str):
        resumes, resume = await _journaled(kernel, plan, resume, retry_in_flight)
    if resume is not None and not _same_steps(resume.plan, plan):
        raise PlanError("resume: the previous run belongs to a different plan (its steps differ)")
    run_inputs = {**plan.inputs, **(resume.inputs if resume is not None else {}), **(inputs or {})}
    problems = plan.problems(kernel, allowed=set(allowed) if allowed is not None else None,
                             max_steps=max_steps, input_names=run_inputs.keys())
    if problems:
        raise PlanValidationError(problems)
    gated = [f"{step.id} ({step.function})" for step in plan.steps
             if kernel.get_function(step.function).needs_approval
             and not (resume is not None and resume.status.get(step.id) == "done")]
    if gated and approval is None:  # the same rule as the tool loop: no callback means no
        raise ApprovalDeniedError(
            f"plan steps {', '.join(gated)} call functions that need approval; pass approval= to run them"
        )
    if approval is not None:
        await _approve(approval, plan.with_inputs(run_inputs))

    run = PlanRun(plan, run_inputs)
    for step in plan.steps:
        if resume is not None and resume.status.get(step.id) == "done":
            run.status[step.id] = "done"
            run.outputs[step.id] = resume.outputs[step.id]
        else:
            run.status[step.id] = "pending"
    events = kernel.events
    if events is None:
        return await _run_graph(kernel, run, max_concurrency, step_timeout)
    with events.plan(plan.to_dict(), run_inputs, resumes) as event:  # a sink is on: the run is journaled
        for step in plan.steps:
            if run.status[step.id] == "done":
                events.carried(step.id, step.function, run.outputs[step.id])
        await _run_graph(kernel, run, max_concurrency, step_timeout)
        event.result = run.result
    return run


async def _journaled(kernel: Kernel, plan: Plan, name: str, retry_in_flight: bool) -> tuple[str, PlanRun]:
    """The journaled run `name` as a PlanRun to resume (and its id)."""
    from ..events import load_plan_state
    from .model import Plan as PlanModel

    try:
        state = await load_plan_state(kernel, name)
    except LookupError as exc:
        raise PlanError(f"resume: {exc}") from None
    if state.alive:
        raise PlanError(f"resume: run {state.run_id} is still running (process {state.pid} on this machine); "
                        "resume it once it has stopped")
    if not state.content and (state.outputs or state.in_flight):
        raise PlanError(f"resume: run {state.run_id} was journaled without content (journal_content = false, "
                        "or its functions in journal_exclude): its step outputs were not kept, so it cannot resume")
    try:
        journaled = PlanModel.from_dict(state.plan)
    except PlanValidationError:
        raise PlanError(f"resume: the plan of run {state.run_id} cannot be read back from the journal") from None
    if not _same_steps(journaled, plan):
        raise PlanError(f"resume: run {state.run_id} ran another plan (its steps differ from this one's)")
    steps = {step.id: step for step in plan.steps}
    for step_id, function in state.in_flight.items():
        fn = kernel.get_function(steps[step_id].function if step_id in steps else function)
        if not fn.idempotent and not retry_in_flight:
            raise PlanError(
                f"resume: step {step_id!r} ({fn.fully_qualified_name}) was running when run {state.run_id} "
                f"stopped, and {fn.fully_qualified_name} is not idempotent: it may already have taken effect, so "
                "it is not run again. Check what it did; to run it again, resume with retry_in_flight=True "
                f"(kernel plan --resume {state.run_id} --retry-in-flight)")
    status: dict[str, StepStatus] = dict.fromkeys(state.outputs, "done")
    return state.run_id, PlanRun(plan, dict(state.inputs), dict(state.outputs), status)


async def _run_graph(kernel: Kernel, run: PlanRun, max_concurrency: int, step_timeout: float | None) -> PlanRun:
    """Run the pending steps of `run` as a graph (see `execute_plan`)."""
    plan = run.plan
    functions = {step.id: kernel.get_function(step.function) for step in plan.steps}
    outer = APPROVAL.get()  # a plan run for a model's tool call keeps that call's approver
    approver = outer.approve if outer is not None else kernel.approval
    semaphore = asyncio.Semaphore(max_concurrency)
    events = kernel.events

    async def invoke(fn: Any, arguments: dict[str, Any], step: Step) -> Any:
        invocation = kernel.invoke(fn, arguments)
        if step_timeout is None:
            return await invocation
        try:
            return await asyncio.wait_for(invocation, step_timeout)
        except TimeoutError:
            raise TimeoutError(f"{step.function} timed out after {step_timeout} s") from None

    async def run_step(step: Step) -> Any:
        async with semaphore:
            fn = functions[step.id]
            schemas = {p.name: p.schema for p in fn.parameters}
            arguments = {}
            for name, value in step.arguments.items():
                if isinstance(value, InputRef | StepRef):
                    value = _coerce(_resolve_ref(run, value, name), schemas.get(name, {}))
                arguments[name] = value
            run.invoked.append(step.id)
            # The step serves the plan (a model's, as a rule): a gated function nested under
            # it asks `approver` (kernel.approval), and is refused without one, as in the tool
            # loop. The step's own function, approved with the plan above, is not asked again.
            # Each step runs in a task of its own: the scope ends with it, and outside an
            # invocation the step is a top-level one (its own call budget).
            call = ToolCall(f"plan-step-{step.id}", fn.tool_name, json.dumps(arguments, default=str))
            APPROVAL.set(ApprovalScope(approver, call, fn.fully_qualified_name if fn.needs_approval else None))
            if events is None:
                result = await invoke(fn, arguments, step)
            else:  # durable: the start is on disk before the step runs, its output before a dependant starts
                with events.step(step.id, fn, arguments) as event:
                    await events.commit()
                    result = await invoke(fn, arguments, step)
                    event.output = result.value
                await events.commit()
            run.usage.add(result.usage)
            return result.value

    running: dict[asyncio.Task[Any], str] = {}

    def start_ready() -> None:
        busy = set(running.values())
        for step in plan.steps:
            if run.status[step.id] != "pending" or step.id in busy:
                continue
            if all(run.status.get(dep) == "done" for dep in step.dependencies()):
                running[asyncio.create_task(run_step(step), name=f"plan-step-{step.id}")] = step.id

    try:
        start_ready()
        while running:
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                step_id = running.pop(task)
                exc = task.exception()
                if exc is None:
                    run.outputs[step_id] = task.result()
                    run.status[step_id] = "done"
                else:
                    run.status[step_id] = "failed"
                    run.errors[step_id] = _reason(exc)
                    log.info("plan_step_failed", step=step_id, error=type(exc).__name__)
            start_ready()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    _mark_skipped(run)
    failed = run.steps_with("failed")
    if failed:
        first = failed[0]
        reason = run.errors[first]
        skipped = run.steps_with("skipped")
        if skipped:
            reason += f" (skipped: {', '.join(skipped)})"
        error = PlanExecutionError(first, reason, dict(run.outputs))
        error.run = run
        raise error
    return run


def _resolve_ref(run: PlanRun, ref: Ref, argument: str) -> Any:
    if isinstance(ref, InputRef):
        return run.inputs[ref.name]
    try:
        return extract(run.outputs[ref.step], ref.segments)
    except LookupError as exc:
        raise PlanError(f"argument {argument!r}: the output of step {ref.step!r} {exc}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KernelError | TimeoutError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _mark_skipped(run: PlanRun) -> None:
    """Steps left pending could not start: a dependency failed or was skipped."""
    by_id = {s.id: s for s in run.plan.steps}

    def blocker(step_id: str, seen: set[str]) -> str | None:
        for dep in sorted(by_id[step_id].dependencies()):
            if run.status.get(dep) == "failed":
                return dep
            if dep not in seen and run.status.get(dep) in ("pending", "skipped"):
                seen.add(dep)
                found = blocker(dep, seen)
                if found:
                    return found
        return None

    for step in run.plan.steps:
        if run.status[step.id] == "pending":
            run.status[step.id] = "skipped"
            cause = blocker(step.id, {step.id})
            run.errors[step.id] = f"skipped: step {cause!r} failed" if cause else "skipped"
