"""The planner: from a goal to a validated plan (`create_plan`), and plans run as a graph
(`execute_plan`); plus `solve`, the open-ended strategy over the function-calling loop.

Generation asks a chat service for a plan with structured output (the plan's JSON schema
as `ChatRequest.output_schema`); a reply in plain text is parsed leniently (code fences
stripped, first JSON object taken). Every problem found by validation goes back to the
model in a repair request, up to `max_repairs` times. Valid plans are cached per kernel
(goal + allowed functions with their schemas + input names).

Execution starts every step whose dependencies are done, bounded by `max_concurrency`;
a failed step skips its dependants while independent branches finish. The `PlanRun`
state (outputs and status per step) can be passed back as `resume=` to re-run only what
did not finish. See `kernel.plan` for the data model and the JSON form.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .contents import ChatMessage, ChatRequest, Usage
from .errors import (
    ApprovalDeniedError,
    FunctionNotFoundError,
    KernelError,
    PlanError,
    PlanExecutionError,
    PlanValidationError,
)
from .functions import KernelFunction
from .logging import get_logger
from .plan import InputRef, Plan, Ref, Step, StepRef, return_schema_of

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = [
    "PlanCache",
    "PlanRun",
    "Solution",
    "create_plan",
    "execute_plan",
    "plan_cache",
    "plan_schema",
    "planning_messages",
    "select_functions",
    "solve",
]

log = get_logger("kernel.planner")

StepStatus = Literal["pending", "done", "failed", "skipped"]
Approval = Callable[[Plan], bool | Awaitable[bool]]

# --- choosing functions ---------------------------------------------------------------------------


def select_functions(kernel: Kernel, plugins: Iterable[str] | None = None,
                     functions: Iterable[str | KernelFunction] | None = None) -> list[KernelFunction]:
    """The functions a plan may use: all of them (both None), or those of `plugins` plus
    the named `functions`."""
    if plugins is None and functions is None:
        return kernel.functions()
    selected: dict[str, KernelFunction] = {}
    for plugin in plugins or ():
        if plugin not in kernel.plugins:
            raise FunctionNotFoundError(
                f"planner: no plugin named {plugin!r} (plugins: {', '.join(sorted(kernel.plugins)) or 'none'})"
            )
        for fn in kernel.plugins[plugin]:
            selected[fn.fully_qualified_name] = fn
    for item in functions or ():
        fn = item if isinstance(item, KernelFunction) else kernel.get_function(item)
        selected[fn.fully_qualified_name] = fn
    return list(selected.values())


# --- the planning request -----------------------------------------------------------------------

def _ref_schemas(step_ids: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "object", "properties": {"$input": {"type": "string"}}, "required": ["$input"],
         "additionalProperties": False},
        {"type": "object", "properties": {"$step": step_ids, "path": {"type": "string"}},
         "required": ["$step"], "additionalProperties": False},
    ]


def _argument_schema(fn: KernelFunction, step_ids: dict[str, Any]) -> dict[str, Any]:
    properties = {}
    refs = _ref_schemas(step_ids)
    for p in fn.parameters:
        literal = {k: v for k, v in p.schema.items() if k not in ("default", "description", "$defs")}
        properties[p.name] = {"anyOf": [*refs, literal or {}]} if "$ref" not in literal else {}
    return {
        "type": "object",
        "properties": properties,
        "required": [p.name for p in fn.parameters if p.required],
        "additionalProperties": False,
    }


def plan_schema(functions: Sequence[KernelFunction], max_steps: int = 10, *, detailed: bool = True) -> dict[str, Any]:
    """The JSON schema of a plan reply. `detailed` gives each function's step its own
    argument schema (a literal of the parameter's type or a reference) and names the
    steps `s1`..`sN`, which lets grammar-constrained local models produce valid plans."""
    step_ids: dict[str, Any] = {"type": "string"}
    if detailed:
        step_ids = {"type": "string", "enum": [f"s{i}" for i in range(1, max_steps + 1)]}
    step_base = {"id": step_ids, "description": {"type": "string"}}
    if detailed and functions:
        step: dict[str, Any] = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "id": step_base["id"],
                        "function": {"type": "string", "enum": [fn.fully_qualified_name]},
                        "arguments": _argument_schema(fn, step_ids),
                        "description": step_base["description"],
                    },
                    "required": ["id", "function", "arguments"],
                    "additionalProperties": False,
                }
                for fn in functions
            ]
        }
    else:
        step = {
            "type": "object",
            "properties": {
                "id": step_base["id"],
                "function": {"type": "string", "enum": [fn.fully_qualified_name for fn in functions]}
                if functions else {"type": "string"},
                "arguments": {"type": "object"},
                "description": step_base["description"],
            },
            "required": ["id", "function", "arguments"],
        }
    return {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": max_steps},
            "output": step_ids,
        },
        "required": ["steps", "output"],
        "additionalProperties": False,
    }


PLANNER_INSTRUCTIONS = """\
You are a planner. Turn the user's goal into a plan: a short list of function calls whose \
results combine into the answer. Use only the functions listed below, with exactly the \
parameters they declare (every required one, no others).

Reply with one JSON object and nothing else, in this form:
{{"steps": [{{"id": "s1", "function": "plugin.function", "arguments": {{"param": VALUE}}, \
"description": "what this step does"}}], "output": "s1"}}
where "output" is the id of the step whose result answers the goal.

Each argument VALUE is one of:
- a literal JSON value of the parameter's type, for example "French" or 3;
- {{"$input": "NAME"}}: the value of the goal input NAME;
- {{"$step": "ID"}}: the result of an EARLIER step; {{"$step": "ID", "path": "field.sub"}} \
reads one field of a structured (object) result.
Name the steps s1, s2, s3... in order. A step may only refer to steps before it. Steps \
that do not depend on each other run in parallel. Use at most {max_steps} steps.

Functions:
{functions}"""


def describe_function(fn: KernelFunction) -> str:
    lines = [f"- {fn.fully_qualified_name}: {fn.description or '(no description)'}",
             f"  parameters: {json.dumps(fn.parameters_schema, ensure_ascii=False)}"]
    returns = return_schema_of(fn)
    if returns:
        lines.append(f"  returns: {json.dumps(returns, ensure_ascii=False)}")
    return "\n".join(lines)


def _describe_inputs(inputs: Mapping[str, Any]) -> str:
    if not inputs:
        return "Inputs: none"
    lines = ["Inputs (refer to them with {\"$input\": NAME}):"]
    for name, value in inputs.items():
        text = json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"- {name}: {text if len(text) <= 200 else text[:197] + '...'}")
    return "\n".join(lines)


def planning_messages(goal: str, functions: Sequence[KernelFunction], inputs: Mapping[str, Any],
                      max_steps: int, *, system_message: bool = True) -> list[ChatMessage]:
    """The planning conversation. `system_message=False` puts the instructions at the top
    of the user message instead, for models whose chat format drops system messages."""
    catalogue = "\n".join(describe_function(fn) for fn in functions) or "(none)"
    system = PLANNER_INSTRUCTIONS.format(max_steps=max_steps, functions=catalogue)
    user = f"Goal: {goal}\n{_describe_inputs(inputs)}"
    if not system_message:
        return [ChatMessage.user(f"{system}\n\n{user}")]
    return [ChatMessage.system(system), ChatMessage.user(user)]


def repair_message(problems: Sequence[str]) -> ChatMessage:
    listed = "\n".join(f"- {p}" for p in problems)
    return ChatMessage.user(
        f"That plan has these problems:\n{listed}\n"
        "Return the corrected complete plan as one JSON object, in the same form."
    )


def parse_reply(text: str) -> Any:
    """The JSON value of a model's reply: the whole text, else inside code fences, else
    the first JSON object in it."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    if "```" in stripped:
        inner = stripped.split("```", 2)[1]
        inner = inner.split("\n", 1)[1] if "\n" in inner and not inner.lstrip().startswith("{") else inner
        try:
            return json.loads(inner)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    start = stripped.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(stripped, start)
            return value
        except json.JSONDecodeError:
            start = stripped.find("{", start + 1)
    shown = stripped if len(stripped) <= 120 else stripped[:117] + "..."
    raise PlanValidationError([f"the reply is not a JSON plan: {shown!r}"])


# --- cache ----------------------------------------------------------------------------------------


class PlanCache:
    """Valid plans by key (goal, allowed functions and their schemas, input names); in
    memory, and as JSON files in `directory` when given."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._plans: dict[str, str] = {}

    @staticmethod
    def key(goal: str, functions: Sequence[KernelFunction], input_names: Iterable[str]) -> str:
        described = sorted(
            (fn.fully_qualified_name, fn.description, fn.parameters_schema, return_schema_of(fn)) for fn in functions
        )
        payload = json.dumps([goal, described, sorted(input_names)], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> Plan | None:
        text = self._plans.get(key)
        if text is None and self.directory is not None:
            path = self.directory / f"{key}.json"
            if path.is_file():
                text = self._plans[key] = path.read_text(encoding="utf-8")
        if text is None:
            return None
        try:
            return Plan.from_json(text)
        except PlanValidationError:
            return None

    def put(self, key: str, plan: Plan) -> None:
        text = plan.to_json()
        self._plans[key] = text
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{key}.json").write_text(text, encoding="utf-8")

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


_CACHES: weakref.WeakKeyDictionary[Any, PlanCache] = weakref.WeakKeyDictionary()


def plan_cache(kernel: Kernel) -> PlanCache:
    """The in-memory plan cache of this kernel."""
    cache = _CACHES.get(kernel)
    if cache is None:
        cache = _CACHES[kernel] = PlanCache()
    return cache


# --- generation -----------------------------------------------------------------------------------


async def create_plan(
    kernel: Kernel,
    goal: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    plugins: Iterable[str] | None = None,
    functions: Iterable[str | KernelFunction] | None = None,
    service: str | None = None,
    max_steps: int = 10,
    max_repairs: int = 2,
    use_cache: bool = True,
    cache: PlanCache | None = None,
    settings: Mapping[str, Any] | None = None,
    detailed_schema: bool = True,
    system_message: bool = True,
) -> Plan:
    """Ask a chat service for a plan toward `goal` and validate it.

    `inputs`: the goal's input variables (name -> value) the plan may reference;
    `plugins`/`functions`: the allowed functions (default: all); `settings`: execution
    settings of the planning request (`max_tokens`, `temperature`...); `system_message=False`
    sends the instructions in the user message (chat formats without a system role). Invalid plans are
    sent back with their problems up to `max_repairs` times, then PlanValidationError
    lists every remaining problem.
    """
    if not goal.strip():
        raise PlanError("planner: the goal is empty")
    goal_inputs = dict(inputs or {})
    allowed = select_functions(kernel, plugins, functions)
    if not allowed:
        raise PlanError("planner: no functions to plan with (the allowed set is empty)")
    allowed_names = frozenset(fn.fully_qualified_name for fn in allowed)
    store = cache if cache is not None else plan_cache(kernel)
    key = PlanCache.key(goal, allowed, goal_inputs)

    def check(plan: Plan) -> list[str]:
        return plan.problems(kernel, allowed=allowed_names, max_steps=max_steps, input_names=goal_inputs.keys())

    if use_cache:
        cached = store.get(key)
        if cached is not None:
            plan = Plan(goal, goal_inputs, cached.steps, cached.output)
            if not check(plan):
                log.info("plan_cache_hit", goal_chars=len(goal), steps=len(plan.steps))
                return plan

    messages = planning_messages(goal, allowed, goal_inputs, max_steps, system_message=system_message)
    head = len(messages)
    schema = plan_schema(allowed, max_steps, detailed=detailed_schema)
    problems: list[str] = []
    plan_or_none: Plan | None = None
    for attempt in range(max_repairs + 1):
        request = ChatRequest(list(messages), settings=dict(settings or {}), output_schema=schema,
                              output_schema_name="plan")
        response = await kernel.complete(request, service)
        text = response.text
        plan_or_none = None
        try:
            data = parse_reply(text)
            if isinstance(data, Mapping):
                data = {k: v for k, v in data.items() if k not in ("goal", "inputs")}
            plan_or_none = Plan.from_dict(data, goal=goal, inputs=goal_inputs)
            problems = check(plan_or_none)
        except PlanValidationError as exc:
            problems = exc.problems
        if not problems and plan_or_none is not None:
            log.info("plan_created", steps=len(plan_or_none.steps), repairs=attempt)
            if use_cache:
                store.put(key, plan_or_none)
            return plan_or_none
        log.info("plan_invalid", attempt=attempt, problems=len(problems))
        messages = [*messages[:head], ChatMessage.assistant(text), repair_message(problems)]
    error = PlanValidationError(problems)
    error.plan = plan_or_none
    raise error


# --- execution ------------------------------------------------------------------------------------


@dataclass(slots=True)
class PlanRun:
    """The state of one execution: inputs, outputs and status per step, errors, usage.

    Pass it back as `execute_plan(..., resume=run)` to re-run only the steps that are not
    `done`."""

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
    resume: PlanRun | None = None,
    allowed: Iterable[str] | None = None,
    max_steps: int | None = None,
) -> PlanRun:
    """Validate `plan`, ask `approval` (if given), then run its steps as a graph.

    Returns the PlanRun when every step is done. When a step fails, its dependants are
    skipped, independent steps still finish, and PlanExecutionError names the first
    failed step and why, with the outputs so far; its `.run` is the PlanRun to resume.
    """
    if max_concurrency < 1:
        raise PlanError(f"max_concurrency must be at least 1, not {max_concurrency}")
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
    functions = {step.id: kernel.get_function(step.function) for step in plan.steps}
    semaphore = asyncio.Semaphore(max_concurrency)

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
            invocation = kernel.invoke(fn, arguments)
            if step_timeout is None:
                result = await invocation
            else:
                try:
                    result = await asyncio.wait_for(invocation, step_timeout)
                except TimeoutError:
                    raise TimeoutError(f"{step.function} timed out after {step_timeout} s") from None
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


# --- the open-ended strategy ------------------------------------------------------------------------

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
        content += "\n" + _describe_inputs(inputs).replace(' (refer to them with {"$input": NAME})', "")
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
